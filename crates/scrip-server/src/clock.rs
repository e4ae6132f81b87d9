//! The server's clock: the system's, or in test mode the system's plus an
//! offset that only the admin moves (and that is persisted by the store).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use scrip_core::UnixSecs;

#[derive(Debug)]
pub struct Clock {
    test_mode: bool,
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            test_mode: false,
            offset_secs: AtomicI64::new(0),
        }
    }

    pub fn test(offset_secs: i64) -> Clock {
        Clock {
            test_mode: true,
            offset_secs: AtomicI64::new(offset_secs),
        }
    }

    pub fn is_test(&self) -> bool {
        self.test_mode
    }

    pub fn now(&self) -> UnixSecs {
        system_now().saturating_add(self.offset_secs.load(Ordering::Acquire))
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset_secs.load(Ordering::Acquire)
    }

    /// Sets the offset after the store has made the new one durable.
    pub fn set_offset_secs(&self, offset: i64) {
        self.offset_secs.store(offset, Ordering::Release);
    }
}

pub fn system_now() -> UnixSecs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
