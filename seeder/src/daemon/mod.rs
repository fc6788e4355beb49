/*!
The seeder daemon (`seeder serve`): holds spaces by their seed codes only, replicates every
member feed of them with peers, and serves the admin page.

The [`registry`] of held spaces, partner seeders, member certificates and agreements;
[`local`], the view of it the sync state machine asks questions of; [`activity`], what is
happening now; [`serve`], the service wiring (QUIC, control socket, admin page, systemd);
[`ctl`] and [`backend`], the control socket; [`admin`], the admin page's backend;
[`logring`], the recent log lines it shows; [`totals`], each held space's sums, kept current; [`ops`], the changes both of those ask for; [`scrub`], the daily read-back of every feed; [`disk`], listing and
preparing the data disk; [`board`], the
appliance's LED and power button.

It knows spaces only by address: nothing here can decrypt an entry.
*/

pub mod activity;
pub mod admin;
pub mod backend;
pub mod board;
pub mod ctl;
pub mod disk;
pub mod local;
pub mod logring;
pub mod ops;
pub mod registry;
pub mod scrub;
pub mod serve;
pub mod totals;
