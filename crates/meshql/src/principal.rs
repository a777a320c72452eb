use std::collections::BTreeMap;
use std::fmt;

/// The person or service a query runs as. Every session has one; governance
/// policy decides what it may see.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub user: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            ..Self::default()
        }
    }

    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("user", &self.user)
            .field("roles", &self.roles)
            .field("groups", &self.groups)
            .field("attributes", &self.attributes)
            .finish()
    }
}
