//! `identity-reconciler forget`: the operator's side of `POST /forget`.

use anyhow::Context;
use identity_reconciler::config::Settings;
use identity_reconciler::domain::{Email, Phone};
use identity_reconciler::store::ForgetTarget;
use identity_reconciler::views;

/// Erase a person: scrub every contact of their identity, keep only salted hashes
/// of its identifiers so later inputs carrying them are dropped, and publish
/// tombstones for the identity's keys.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["email", "phone", "id"])))]
pub struct Forget {
    /// An email of the person (normalised as the service does).
    #[arg(long)]
    email: Option<String>,
    /// A phone number of the person (normalised as the service does).
    #[arg(long)]
    phone: Option<String>,
    /// Any contact id of the identity.
    #[arg(long)]
    id: Option<i64>,
}

impl Forget {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = super::open_store(settings).await?;
        let mode = settings.reconcile.normalization;
        let target = match (self.email, self.phone, self.id) {
            (Some(e), _, _) => {
                ForgetTarget::Email(Email::parse(&e, mode)?.context("--email is empty")?)
            }
            (_, Some(p), _) => {
                ForgetTarget::Phone(Phone::parse(&p, mode)?.context("--phone is empty")?)
            }
            (_, _, Some(id)) => ForgetTarget::Id(id),
            _ => unreachable!("clap requires one of them"),
        };
        let forgotten = store.forget(&target).await?;
        println!("{}", views::forgotten_json(&forgotten));
        Ok(())
    }
}
