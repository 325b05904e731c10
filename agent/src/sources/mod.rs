//! Where readings come from. Each source is a task that appends to the outbox
//! and stores its own cursor in the same atomic step, so after a crash it
//! resumes exactly where its last durable readings end: nothing lost, nothing
//! produced twice.

pub mod clock;
pub mod csv_drop;
pub mod dlt645;
pub mod http_pull;
pub mod modbus;
pub mod probe;
pub mod profile;
pub mod simulator;
