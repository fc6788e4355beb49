/*!
Seeder keeps small organisations' encrypted, multi-writer file spaces online and backed up
without being able to read them.

Layers, dependencies pointing downwards only:
- [`cli`]: the command line.
- [`daemon`]: `seeder serve`: the registry of held spaces, quotas, (to come) the QUIC driver,
  control socket and admin page wiring.
- [`sync`]: the replication protocol as a pure state machine.
- [`fs`]: the member file layer: records, vector clocks, the merged view; a device's home.
- [`store`]: durable feeds on disk (sled index + append-only data files), crash recovery.
- [`wire`]: message types and framing, size limits — pure.
- [`space`]: keys, seed and invite codes, content cipher, capabilities, membership — pure.
- [`feed`]: Merkle tree, signed heads, proofs — pure.
*/
#![forbid(unsafe_code)]

pub mod cli;
pub mod daemon;
pub mod feed;
pub mod fs;
pub mod net;
pub mod space;
pub mod store;
pub mod sync;
pub mod wire;
