//! Worker capacity as a tower layer: the apalis worker asks its service whether it is
//! ready before it fetches a job, so holding a slot in `poll_ready` means a worker never
//! takes a spawn it has no room for. The slot travels with the job: the handler takes it
//! (`take_handed_slot`) and gives it to the agent it starts, which frees it when it ends;
//! a handler that starts nothing (a duplicate delivery) frees it by returning. The embedded
//! queue takes the same slots with `Slots::acquire` before it looks for a job and hands them
//! over the same way (`with_handed_slot`).
//!
//! The gate also remembers the consumer task's waker (`Wakeup`): an idle apalis-redis
//! worker otherwise only looks for jobs at its next heartbeat, so a push notification
//! wakes it to fetch at once.
//!
//! Slots can be closed with a reason (the worker cannot write its workspace): then no slot
//! is handed out, so the worker takes no spawn another worker could run, until they open.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::PollSemaphore;
use tower::{Layer, Service};

tokio::task_local! {
    static HANDED_SLOT: RefCell<Option<OwnedSemaphorePermit>>;
}

/// The slot the gate handed to the job being handled, if any (once).
pub fn take_handed_slot() -> Option<OwnedSemaphorePermit> {
    HANDED_SLOT
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten()
}

/// Runs `fut` with `slot` handed to it, as the gate does for apalis jobs.
pub async fn with_handed_slot<F: std::future::Future>(
    slot: Option<OwnedSemaphorePermit>,
    fut: F,
) -> F::Output {
    HANDED_SLOT.scope(RefCell::new(slot), fut).await
}

/// A worker's slots: one per agent it may run at once.
#[derive(Clone, Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    /// Why no slot is handed out now (`None`: open).
    closed: Arc<watch::Sender<Option<String>>>,
    /// The gate's task waiting for the slots to open.
    reopened: Arc<AtomicWaker>,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
            closed: Arc::new(watch::Sender::new(None)),
            reopened: Arc::default(),
        }
    }

    /// Hands out no slot until [`open`](Self::open); agents holding one keep it.
    pub fn close(&self, reason: &str) {
        self.closed.send_replace(Some(reason.to_owned()));
    }

    pub fn open(&self) {
        if self.closed.send_replace(None).is_some() {
            self.reopened.wake();
        }
    }

    /// Why the slots are closed, if they are.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.free())
    }

    /// A slot if one is free now.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// Waits for the slots to be open and one to be free; it is held until the permit is
    /// dropped.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(Option::is_none).await;
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }
}

/// Wakes the consumer task that polls the gate, so that it asks the queue for a job now
/// instead of at its next poll. The task's waker stays registered after a wake: a push
/// announced while the task is still busy with the previous job wakes it again (a waker
/// taken by the first wake, as `AtomicWaker` does, would leave that push to the poll).
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<std::sync::Mutex<Option<Waker>>>);

impl Wakeup {
    pub fn wake(&self) {
        if let Ok(waker) = self.0.lock()
            && let Some(waker) = waker.as_ref()
        {
            waker.wake_by_ref();
        }
    }

    fn register(&self, waker: &Waker) {
        if let Ok(mut registered) = self.0.lock()
            && !registered.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            *registered = Some(waker.clone());
        }
    }
}

#[derive(Clone, Debug)]
pub struct SlotGateLayer {
    slots: Slots,
    wakeup: Wakeup,
}

impl SlotGateLayer {
    pub fn new(slots: Slots) -> Self {
        Self {
            slots,
            wakeup: Wakeup::default(),
        }
    }

    /// The same gate, registering the consumer task with `wakeup`.
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }
}

impl<S> Layer<S> for SlotGateLayer {
    type Service = SlotGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SlotGate {
            inner,
            slots: self.slots.clone(),
            semaphore: PollSemaphore::new(self.slots.semaphore.clone()),
            permit: None,
            wakeup: self.wakeup.clone(),
        }
    }
}

#[derive(Debug)]
pub struct SlotGate<S> {
    inner: S,
    slots: Slots,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    wakeup: Wakeup,
}

impl<S: Clone> Clone for SlotGate<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            slots: self.slots.clone(),
            semaphore: self.semaphore.clone(),
            permit: None,
            wakeup: self.wakeup.clone(),
        }
    }
}

impl<S, Req> Service<Req> for SlotGate<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The consumer polls the gate, then the queue, in the same task: waking it makes it
        // fetch again.
        self.wakeup.register(cx.waker());
        if self.slots.closed.borrow().is_some() {
            self.slots.reopened.register(cx.waker());
            // Opened between the look and the registration, its wake-up went elsewhere:
            // look again.
            if self.slots.closed.borrow().is_some() {
                return Poll::Pending;
            }
        }
        if self.permit.is_none() {
            match self.semaphore.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => self.permit = Some(permit),
                // The semaphore is never closed; stay pending rather than panic.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = self.permit.take();
        let fut = self.inner.call(req);
        Box::pin(HANDED_SLOT.scope(RefCell::new(permit), fut))
    }
}
