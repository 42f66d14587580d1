//! Injected failures: "the next N calls of this kind fail with this error", optionally after
//! letting some calls through first (to fail in the middle of a paged round, say).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Makes the error a failing call returns. The ports' errors are not `Clone` (some carry a boxed
/// cause), so each failure makes its own.
pub type MakeError<E> = Arc<dyn Fn() -> E + Send + Sync>;

struct Rule<K, E> {
    kind: K,
    /// Matching calls still let through before the rule starts failing.
    pass: usize,
    /// Matching calls still to fail.
    times: usize,
    make: MakeError<E>,
}

/// The failures queued for a fake, by kind of call.
pub(crate) struct Faults<K, E> {
    rules: Vec<Rule<K, E>>,
}

impl<K: PartialEq + Copy, E> Default for Faults<K, E> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<K: PartialEq + Copy, E> Faults<K, E> {
    pub(crate) fn add(&mut self, kind: K, pass: usize, times: usize, make: MakeError<E>) {
        if times > 0 {
            self.rules.push(Rule {
                kind,
                pass,
                times,
                make,
            });
        }
    }

    /// A call that matches any of `kinds`: every matching rule counts it; the first one due to
    /// fail makes the error.
    pub(crate) fn check(&mut self, kinds: &[K]) -> Option<E> {
        let mut error = None;
        for rule in self.rules.iter_mut().filter(|r| kinds.contains(&r.kind)) {
            if rule.pass > 0 {
                rule.pass -= 1;
            } else if error.is_none() {
                rule.times -= 1;
                error = Some((rule.make)());
            }
        }
        self.rules.retain(|r| r.times > 0);
        error
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_then_fails_then_recovers() {
        let mut f: Faults<u8, &str> = Faults::default();
        f.add(1, 1, 2, Arc::new(|| "boom"));
        assert_eq!(f.check(&[2]), None, "another kind");
        assert_eq!(f.check(&[1]), None, "let through");
        assert_eq!(f.check(&[1]), Some("boom"));
        assert_eq!(f.check(&[1, 2]), Some("boom"));
        assert_eq!(f.check(&[1]), None, "exhausted");
    }
}
