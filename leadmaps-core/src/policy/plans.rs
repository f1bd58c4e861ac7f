//! Plans and the features they unlock.
//!
//! Every workspace is on one [`Plan`]; [`Plan::unlocks`] is the one table that says which
//! [`Feature`] each plan includes. Code that offers a plan-bound feature asks
//! [`Plan::require`], which refuses with [`Denied::FeatureNotInPlan`] naming the feature and the
//! least plan that has it, so the HTTP layer can answer 403 with a clear reason:
//!
//! ```
//! use leadmaps_core::policy::{Feature, Plan};
//! assert!(Plan::Business.require(Feature::Sso).is_ok());
//! let refused = Plan::Pro.require(Feature::Scim).unwrap_err();
//! assert_eq!(refused.to_string(), "SCIM provisioning is available on the Business plan and above");
//! ```
//!
//! A workspace's plan is set by provisioning (billing), never by its members: see
//! [`crate::sso::SsoStore::set_plan`].

use crate::error::{Error, Result};
use crate::tenancy::Denied;

/// A workspace's subscription plan, in ascending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Plan {
    /// The default.
    #[default]
    Free,
    /// Paid, for small teams.
    Pro,
    /// SSO and SCIM.
    Business,
    /// Everything, including the HIPAA business associate agreement.
    Enterprise,
}

impl Plan {
    /// Every plan, ascending.
    pub const ALL: [Plan; 4] = [Plan::Free, Plan::Pro, Plan::Business, Plan::Enterprise];

    /// The stable lower-case name stored in databases and APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
        }
    }

    /// The name shown to people.
    pub const fn title(self) -> &'static str {
        match self {
            Plan::Free => "Free",
            Plan::Pro => "Pro",
            Plan::Business => "Business",
            Plan::Enterprise => "Enterprise",
        }
    }

    /// Parses [`Plan::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|plan| plan.as_str() == name)
    }

    /// The one table: whether this plan includes `feature`. A plan includes every feature of
    /// the plans below it.
    pub const fn unlocks(self, feature: Feature) -> bool {
        self as u8 >= feature.least_plan() as u8
    }

    /// Checks that this plan includes `feature`.
    ///
    /// # Errors
    /// [`Denied::FeatureNotInPlan`] naming the feature.
    pub fn require(self, feature: Feature) -> Result<(), Denied> {
        if self.unlocks(feature) {
            Ok(())
        } else {
            Err(Denied::FeatureNotInPlan(feature))
        }
    }

    /// The features this plan includes.
    pub fn features(self) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.unlocks(*f))
            .collect()
    }
}

impl std::str::FromStr for Plan {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| {
            Error::invalid("unknown plan (expected free, pro, business or enterprise)")
        })
    }
}

/// Something only some plans include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Feature {
    /// Single sign-on (SAML 2.0 and OIDC), and enforcing it.
    Sso,
    /// SCIM 2.0 provisioning.
    Scim,
    /// Exporting the audit log.
    AuditExport,
    /// A signed HIPAA business associate agreement.
    HipaaBaa,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 4] = [
        Feature::Sso,
        Feature::Scim,
        Feature::AuditExport,
        Feature::HipaaBaa,
    ];

    /// The least plan that includes the feature: the rows of the table.
    pub const fn least_plan(self) -> Plan {
        match self {
            Feature::AuditExport => Plan::Pro,
            Feature::Sso | Feature::Scim => Plan::Business,
            Feature::HipaaBaa => Plan::Enterprise,
        }
    }

    /// The stable name, for APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feature::Sso => "sso",
            Feature::Scim => "scim",
            Feature::AuditExport => "audit_export",
            Feature::HipaaBaa => "hipaa_baa",
        }
    }

    /// The name shown to people.
    pub const fn title(self) -> &'static str {
        match self {
            Feature::Sso => "Single sign-on",
            Feature::Scim => "SCIM provisioning",
            Feature::AuditExport => "Audit log export",
            Feature::HipaaBaa => "The HIPAA business associate agreement",
        }
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let least = self.least_plan();
        if least == Plan::Enterprise {
            write!(f, "{} is available on the Enterprise plan", self.title())
        } else {
            write!(
                f,
                "{} is available on the {} plan and above",
                self.title(),
                least.title()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use Feature::*;
        let table = [
            (Plan::Free, vec![]),
            (Plan::Pro, vec![AuditExport]),
            (Plan::Business, vec![Sso, Scim, AuditExport]),
            (Plan::Enterprise, vec![Sso, Scim, AuditExport, HipaaBaa]),
        ];
        for (plan, features) in table {
            assert_eq!(plan.features(), features, "{plan:?}");
            for feature in Feature::ALL {
                assert_eq!(plan.require(feature).is_ok(), features.contains(&feature));
            }
        }
        for plan in [Plan::Free, Plan::Pro] {
            assert_eq!(
                plan.require(Sso),
                Err(Denied::FeatureNotInPlan(Sso)),
                "SSO needs Business"
            );
            assert_eq!(plan.require(Scim), Err(Denied::FeatureNotInPlan(Scim)));
        }
    }

    #[test]
    fn names_round_trip_and_reasons_are_clear() {
        for plan in Plan::ALL {
            assert_eq!(Plan::parse(plan.as_str()), Some(plan));
            assert_eq!(plan.as_str().parse::<Plan>().unwrap(), plan);
        }
        assert!("gold".parse::<Plan>().is_err());
        assert_eq!(Plan::default(), Plan::Free);
        assert_eq!(
            Denied::FeatureNotInPlan(Feature::Sso).to_string(),
            "Single sign-on is available on the Business plan and above"
        );
        assert_eq!(
            Feature::HipaaBaa.to_string(),
            "The HIPAA business associate agreement is available on the Enterprise plan"
        );
    }
}
