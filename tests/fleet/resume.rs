//! Questions and resume: an agent that asks questions waits for input; answers resume the
//! same session in the same worktree on its node, continuing its event sequence.

use std::time::Duration;

use agentfleet::domain::AgentStatus;

use crate::common::env::{TestEnv, assert_status};

const ASK: &str = "pick a database\n#signal {\"status\":\"questions\",\"questions\":[{\"id\":\"db\",\"question\":\"Which database?\"}]}";

#[tokio::test(flavor = "multi_thread")]
async fn answers_resume_the_same_session_in_the_same_worktree() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let agent = env.spawn(&["--name", "asking-otter"], ASK);
    let waiting = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&waiting, AgentStatus::WaitingForInput);
    let session = waiting.session_id.clone().expect("session id");

    let out = env
        .command(&[
            "resume",
            "asking-otter",
            "--answer",
            "db=Postgres, please",
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resume --wait failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = env.store().await.agent("asking-otter").await.unwrap();
    assert_status(&done, AgentStatus::Completed);
    assert_eq!(
        done.session_id.as_deref(),
        Some(session.as_str()),
        "same session"
    );
    assert!(done.pending_questions.is_empty());
    assert_eq!(done.workdir, waiting.workdir, "same worktree");
    let resumed = env
        .remote_file("agent/asking-otter", "RESUMED.txt")
        .expect("the resumed run's file on the pushed branch");
    assert!(
        resumed.starts_with(&format!("resumed {session}")),
        "{resumed}"
    );
    assert!(
        resumed.contains("Postgres, please"),
        "the answers reached the CLI: {resumed}"
    );

    let events = env.store().await.events_after(agent.id, 0).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "one event sequence across both runs");
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let resumed_at = kinds
        .iter()
        .position(|k| *k == "agent.resumed")
        .expect("agent.resumed");
    assert!(kinds[..resumed_at].contains(&"result") && kinds[resumed_at..].contains(&"result"));
    assert_eq!(env.runs(), 2);
    env.stop_workers();
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_is_refused_when_it_cannot_happen() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[]);
    let finished = env.spawn(&["--name", "done-otter"], "just finish");
    env.wait_final(finished.id, Duration::from_secs(60)).await;
    let asking = env.spawn(&["--name", "asking-otter"], ASK);
    env.wait_final(asking.id, Duration::from_secs(60)).await;
    let store = env.store().await;
    let events_before = store.events_after(asking.id, 0).await.unwrap().len();

    let cases: [(&[&str], &str); 4] = [
        (
            &["resume", "done-otter", "--answer", "db=x"],
            "is not waiting for input (it is completed)",
        ),
        (
            &["resume", "asking-otter", "--answer", "nope=x"],
            "asked no question 'nope'",
        ),
        (
            &["resume", "asking-otter", "--answer", "no-equals-sign"],
            "is not ID=TEXT",
        ),
        (&["resume", "asking-otter"], "give at least one answer"),
    ];
    for (args, want) in cases {
        let out = env.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let after = store.agent("asking-otter").await.unwrap();
    assert_status(&after, AgentStatus::WaitingForInput);
    assert_eq!(
        store.events_after(asking.id, 0).await.unwrap().len(),
        events_before
    );
    env.stop_workers();
}
