//! The connectors and actions the engine knows, by id.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Connector, DynAction};

/// A connector as listed by `engine connectors`.
#[derive(Clone)]
pub struct ConnectorInfo {
    /// Name.
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// Action ids.
    pub actions: Vec<&'static str>,
}

/// Connectors and their actions.
#[derive(Default, Clone)]
pub struct Registry {
    connectors: BTreeMap<&'static str, ConnectorInfo>,
    actions: BTreeMap<&'static str, Arc<dyn DynAction>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actions.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a connector and all its actions.
    ///
    /// # Panics
    /// When an action id does not start with the connector's name (a programming error).
    pub fn register(&mut self, connector: &dyn Connector) {
        let actions = connector.actions();
        let mut ids = Vec::new();
        for a in actions {
            let id = a.id();
            assert!(id.starts_with(&format!("{}.", connector.name())), "action {id} outside connector {}", connector.name());
            ids.push(id);
            self.actions.insert(id, a);
        }
        self.connectors.insert(connector.name(), ConnectorInfo { name: connector.name(), description: connector.description(), actions: ids });
    }

    /// An action by full id.
    #[must_use]
    pub fn action(&self, id: &str) -> Option<&Arc<dyn DynAction>> {
        self.actions.get(id)
    }

    /// Whether a connector of this name exists.
    #[must_use]
    pub fn has_connector(&self, name: &str) -> bool {
        self.connectors.contains_key(name)
    }

    /// Every connector, by name.
    pub fn connectors(&self) -> impl Iterator<Item = &ConnectorInfo> {
        self.connectors.values()
    }

    /// Every action id.
    pub fn action_ids(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.keys().copied()
    }
}
