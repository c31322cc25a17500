//! What a test holds of a running emulator: where its API answers, its faults and the
//! calls it was sent. Every emulator's handle is one, so a test or the fault matrix
//! drives Fly, Heroku, App Platform, droplets and GitHub the same way.

use super::{Call, FaultSet, Gate};

pub trait Handle {
    type Faults: FaultSet;

    /// The emulator's fault set and call log.
    fn gate(&self) -> &Gate<Self::Faults>;

    /// The API base a client is pointed at, e.g. "http://127.0.0.1:PORT".
    fn api_url(&self) -> String;

    /// From the next request on, the API answers with these faults.
    fn set_faults(&self, faults: Self::Faults) {
        self.gate().set_faults(faults);
    }

    fn faults(&self) -> Self::Faults {
        self.gate().faults()
    }

    /// Every API request so far, in the order they were answered.
    fn calls(&self) -> Vec<Call> {
        self.gate().calls.all()
    }

    fn reset_calls(&self) {
        self.gate().calls.clear();
    }
}
