//! The call log: one record per API request an emulator answered (or reset), in
//! order, so a test can assert what a client did, not only where it ended up.
//! Control requests (`/__sandbox/*`) are never recorded: `api` sees to that.
//!
//! A record knows the request's line, its JSON body and the answer's status, and the
//! resource it was about as the emulator named it; it knows no provider's paths.

use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One API request, as the emulator answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// 0 when the connection was closed without an answer (a reset fault).
    pub status: u16,
    /// The resource the call is about, as the emulator reads it from the path: a
    /// machine id (Fly), a deployment id (GitHub).
    pub target: Option<String>,
    /// The request body, when it was JSON (never for a reset: it was not read).
    pub body: Option<Value>,
}

impl Call {
    /// Anything but a GET.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// One line for assertion messages, e.g. "POST /repos/acme/shop/deployments 201".
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.status)
    }
}

/// The calls so far; shared between the server's tasks and the test's handle.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<Call>>,
}

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        // A test thread that panicked while reading must not take the log with it.
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, call: Call) {
        self.lock().push(call);
    }

    /// Every call so far, in the order they were answered.
    pub fn all(&self) -> Vec<Call> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, status: u16) -> Call {
        Call {
            method: method.into(),
            path: "/v1/apps/web/machines/abc".into(),
            query: None,
            status,
            target: Some("abc".into()),
            body: None,
        }
    }

    #[test]
    fn only_gets_are_reads() {
        assert!(!call("GET", 200).is_write());
        assert!(call("POST", 200).is_write() && call("DELETE", 200).is_write());
        assert_eq!(call("POST", 0).summary(), "POST /v1/apps/web/machines/abc 0");
    }

    #[test]
    fn the_log_keeps_order_until_cleared() {
        let log = CallLog::default();
        log.push(call("GET", 200));
        log.push(call("POST", 503));
        assert_eq!(log.all().iter().map(|c| c.status).collect::<Vec<_>>(), [200, 503]);
        log.clear();
        assert!(log.is_empty());
    }
}
