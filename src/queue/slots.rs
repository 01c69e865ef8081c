//! Worker capacity as a tower layer: the apalis worker asks its service whether it is
//! ready before it fetches a job, so holding a slot in `poll_ready` means a worker never
//! takes a spawn it has no room for. The slot travels with the job: the handler takes it
//! (`take_handed_slot`) and gives it to the agent it starts, which frees it when it ends;
//! a handler that starts nothing (a duplicate delivery) frees it by returning. The embedded
//! queue takes the same slots with `Slots::acquire` before it looks for a job and hands them
//! over the same way (`with_handed_slot`).

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
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

    /// Waits for a free slot; it is held until the permit is dropped.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }
}

#[derive(Clone, Debug)]
pub struct SlotGateLayer {
    slots: Slots,
}

impl SlotGateLayer {
    pub fn new(slots: Slots) -> Self {
        Self { slots }
    }
}

impl<S> Layer<S> for SlotGateLayer {
    type Service = SlotGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SlotGate {
            inner,
            semaphore: PollSemaphore::new(self.slots.semaphore.clone()),
            permit: None,
        }
    }
}

#[derive(Debug)]
pub struct SlotGate<S> {
    inner: S,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl<S: Clone> Clone for SlotGate<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: self.semaphore.clone(),
            permit: None,
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
