//! Hyper's upgrade handle, moved out of each request by the server so that warp's
//! filters (whose extensions must be `Clone`) can hand it to the socket's
//! handshake.

use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;

/// Hyper's upgrade handle for one request, in a form warp's `ext` filters accept.
#[derive(Clone, Debug, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    /// Moves the upgrade handle hyper put in `request` into a slot beside it.
    pub fn stash<B>(request: &mut http::Request<B>) {
        if let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() {
            let slot = UpgradeSlot(Arc::new(Mutex::new(Some(on_upgrade))));
            request.extensions_mut().insert(slot);
        }
    }

    /// The handle, once: the socket that answers the upgrade takes it.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().ok()?.take()
    }
}
