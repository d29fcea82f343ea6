//! `identity-reconciler reviews`: the operator's side of `GET /reviews` and of
//! `POST /reviews/{id}/approve|reject`.

use identity_reconciler::config::Settings;
use identity_reconciler::views::{self, ReviewQuery};

/// The review queue: links refused by a cap, a keep-apart decision or a
/// quarantined identifier.
#[derive(clap::Args)]
pub struct Reviews {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Print pending entries, oldest first, as JSON (as `GET /reviews`).
    List {
        /// Only this reason: max_emails, max_phones, max_contacts, keep_apart, quarantine.
        #[arg(long)]
        reason: Option<String>,
        /// The `nextCursor` of the previous page.
        #[arg(long)]
        after: Option<i64>,
        /// Entries per page (1-500, default 50).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Make the refused merge now (or release the quarantined identifier).
    Approve {
        /// The entry's id (`id` in `reviews list`).
        id: i64,
    },
    /// Keep the two identities apart for good (a quarantined identifier stays so).
    Reject {
        /// The entry's id (`id` in `reviews list`).
        id: i64,
    },
}

impl Reviews {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = super::open_store(settings).await?;
        let answer = match self.action {
            Action::List {
                reason,
                after,
                limit,
            } => {
                let query = ReviewQuery {
                    reason,
                    after,
                    limit,
                };
                let (reason, after, limit) = query.checked()?;
                views::review_page_json(&store.reviews(reason, after, limit).await?)
            }
            Action::Approve { id } => views::review_decision_json(&store.approve_review(id).await?),
            Action::Reject { id } => views::review_decision_json(&store.reject_review(id).await?),
        };
        println!("{answer}");
        Ok(())
    }
}
