//! Where readings come from. Each source is a task that appends to the outbox
//! and stores its own cursor in the same atomic step, so after a crash it
//! resumes exactly where its last durable readings end: nothing lost, nothing
//! produced twice.

#[cfg(any(
    feature = "modbus",
    feature = "dlt645",
    feature = "http-pull",
    feature = "gateways",
    feature = "opcua"
))]
pub mod admit;
pub mod clock;
#[cfg(any(feature = "gateways", feature = "opcua"))]
pub mod counts;
#[cfg(feature = "csv")]
pub mod csv_drop;
#[cfg(feature = "modbus")]
pub mod cursor;
#[cfg(feature = "dlt645")]
pub mod dlt645;
#[cfg(feature = "gateways")]
pub mod gateways;
#[cfg(feature = "http-pull")]
pub mod http_pull;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "opcua")]
pub mod opcua;
pub mod probe;
pub mod profile;
#[cfg(feature = "csv")]
pub mod profile_sheet;
#[cfg(feature = "serial")]
pub mod serial;
pub mod series;
pub mod simulator;
pub mod supervise;
