//! Run-time switches of a suite: a case's active flag changed while the runner runs (the
//! `livecheck` service follows the control topic and sets them here).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::case::Case;
use crate::runner::Suite;

/// Active flags set at run time, over the cases' own ([`crate::Settings::active`]).
#[derive(Debug, Default)]
pub(crate) struct ActiveSwitches(RwLock<HashMap<String, bool>>);

impl Suite {
    /// Sets whether `case` runs from now on, over its own `active` setting: while it does
    /// not, its tests are `SKIP` ("case … is inactive"). Shared by every clone of the suite,
    /// so a runner built with it follows.
    pub fn set_active(&self, case: &str, active: bool) {
        self.active
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(case.to_owned(), active);
    }

    /// Whether `case` runs now: the flag set with [`Suite::set_active`], else its own.
    pub fn is_active(&self, case: &Case) -> bool {
        self.active
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(case.name())
            .copied()
            .unwrap_or(case.settings().active)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Case, Run, Suite};

    #[test]
    fn a_switch_overrides_the_case_setting_in_every_clone() {
        let case = || Case::new("a.b").expect(|_: Run, (): ()| async { Ok(()) });
        let suite = Suite::new([case().active(false)]).expect("suite");
        let clone = suite.clone();
        let a = suite.get("a.b").expect("case").clone();
        assert!(!suite.is_active(&a));
        clone.set_active("a.b", true);
        assert!(suite.is_active(&a));
        suite.set_active("a.b", false);
        assert!(!clone.is_active(&a));
        // Without a switch, the case's own setting.
        let fresh = Suite::new([case()]).expect("suite");
        assert!(fresh.is_active(fresh.get("a.b").expect("case")));
    }
}
