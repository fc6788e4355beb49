/*!
The daemon's operations: the typed changes the control socket and the admin page both ask
for (hold or drop a space, add or remove a partner seeder). Each one writes the registry and
then tells the connection layer, so a change takes effect on live connections at once
instead of at the next dial.

Not for presentation: the callers turn results and [`OpsError`] into JSON lines or HTTP
answers. Reading state (status, lists) stays with the callers too.
*/

use std::sync::Arc;

use super::backend::Daemon;
use super::registry::{HeldSpace, Partner, RegistryError};
use crate::net::NodeId;
use crate::space::SeedCode;

/// Why an operation was not done.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request itself is wrong; the message says how to put it right.
    #[error("{0}")]
    Invalid(String),
    /// The thing it names is not here.
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be read or written.
    #[error("the registry: {0}")]
    Registry(RegistryError),
}

impl From<RegistryError> for OpsError {
    fn from(e: RegistryError) -> OpsError {
        match e {
            RegistryError::UnknownSpace(_) | RegistryError::UnknownAgreement(_) => {
                OpsError::NotFound(e.to_string())
            }
            RegistryError::AlreadyHeld(_)
            | RegistryError::NameTaken(_)
            | RegistryError::BadName(_) => OpsError::Invalid(e.to_string()),
            other => OpsError::Registry(other),
        }
    }
}

/// What the connection layer must hear about the registry's changes.
#[derive(Default)]
pub struct Links {
    /// The driver of every live connection, once the node is listening.
    pub driver: Option<Arc<crate::net::driver::Driver>>,
    /// Wakes the partner dialer, so a new partner is dialed now rather than at its next round.
    pub partners_changed: Arc<tokio::sync::Notify>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Hold the space of `code`, and open it with every partner seeder connected now.
    pub fn add_space(
        &self,
        code: &SeedCode,
        name: Option<&str>,
        quota: Option<u64>,
    ) -> Result<HeldSpace, OpsError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let held = self.registry.add_space(code, name, quota, now_secs())?;
        tracing::info!(space = %held.name, "space added");
        if let Some(driver) = &self.links.driver {
            for p in self.registry.partners()? {
                let id = NodeId(p.node_id);
                if self.activity.is_connected(&id) {
                    driver.open_with(id, held.address);
                }
            }
        }
        // Partners not connected now (a partner that held nothing in common with us closed an
        // idle link) are dialed at once; a new connection opens every held space.
        self.links.partners_changed.notify_one();
        Ok(held)
    }

    /// Stop holding the space named `name`; with `purge`, delete its feeds too. Returns the
    /// number of feeds deleted.
    pub fn remove_space(&self, name: &str, purge: bool) -> Result<usize, OpsError> {
        let purged = self.registry.remove_space(name, purge)?;
        tracing::info!(space = %name, purge, "space removed");
        Ok(purged)
    }

    /// Keep `partner` connected and open every held space with it.
    pub fn add_partner(&self, partner: &Partner) -> Result<(), OpsError> {
        if partner.node_id == self.node_id.0 {
            return Err(OpsError::Invalid(
                "that is this seeder's own node id".into(),
            ));
        }
        self.registry.add_partner(partner)?;
        tracing::info!(partner = %partner.address, "partner seeder added");
        // Connected already (it dialed this seeder): governed spaces it was denied are
        // opened again, now that it is served them.
        let id = NodeId(partner.node_id);
        if let Some(driver) = &self.links.driver {
            if self.activity.is_connected(&id) {
                for held in self.registry.spaces()? {
                    driver.open_with(id, held.address);
                }
            }
        }
        self.links.partners_changed.notify_one();
        Ok(())
    }

    /// Stop dialing the partner with `node_id` and close the connections to it (it comes
    /// back only if it dials this seeder itself, for a space both hold).
    pub fn remove_partner(&self, node_id: &[u8; 32]) -> Result<(), OpsError> {
        if !self.registry.remove_partner(node_id)? {
            return Err(OpsError::NotFound(format!(
                "no partner {}",
                hex::encode(node_id)
            )));
        }
        self.activity
            .close_all(&crate::net::NodeId(*node_id), "partner removed");
        tracing::info!(partner = %hex::encode(node_id), "partner seeder removed");
        Ok(())
    }

    /// The partner a person named by its node id or a unique start of it (at least 8 hex
    /// digits, as status lines show).
    pub fn find_partner(&self, given: &str) -> Result<[u8; 32], OpsError> {
        let given = given.trim().to_ascii_lowercase();
        if !(8..=64).contains(&given.len()) || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OpsError::Invalid(format!(
                "{given:?} is not a node id: give at least its first 8 hex digits, as \
                 `seeder ctl peer list` shows"
            )));
        }
        let matches: Vec<[u8; 32]> = self
            .registry
            .partners()?
            .into_iter()
            .map(|p| p.node_id)
            .filter(|id| hex::encode(id).starts_with(&given))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(OpsError::NotFound(format!(
                "no partner seeder {given} (seeder ctl peer list shows them)"
            ))),
            _ => Err(OpsError::Invalid(format!(
                "{} partners start with {given}: give more of the node id",
                matches.len()
            ))),
        }
    }
}
