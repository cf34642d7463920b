//! Small shared helpers at the bottom of the layers: every layer may use them, they use none.

pub mod duration;
pub mod glob;
pub mod percent;

pub use duration::parse_duration;
