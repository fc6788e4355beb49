/*!
The seeder daemon (`seeder serve`): holds spaces by their seed codes only, replicates every
member feed of them with peers, and serves the admin page.

So far this module holds the daemon's durable state — the [`registry`] of held spaces,
partner seeders and member certificates — and [`local`], the view of that state the sync
state machine asks questions of. The QUIC driver, the control socket and the service wiring
come on top of these.

It knows spaces only by address: nothing here can decrypt an entry.
*/

pub mod backend;
pub mod ctl;
pub mod local;
pub mod registry;
pub mod serve;
