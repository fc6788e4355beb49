/*!
The seeder's admin site. It knows nothing of QUIC or sled: everything it shows or changes goes
through the `AdminBackend` trait that the daemon implements. Until the admin page is built this
crate only fixes its place in the workspace.
*/
#![forbid(unsafe_code)]
