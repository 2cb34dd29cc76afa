//! Events: one source task per gateway (the Redis stream, or the user-service's
//! WatchUsers) feeds the [`Hub`], which turns each event into its JSON [`frame`]
//! once, keeps a bounded window of recent frames for resuming sockets, and hands
//! the same frame to every socket's bounded queue. Both sources run under
//! [`source::run`], the one reconnect loop.

pub mod filter;
pub mod frame;
pub mod hub;
pub mod redis;
pub mod source;
pub mod watch;

pub use filter::UserSet;
pub use frame::{Frame, Outbound};
pub use hub::{Change, FeedWait, Hub, Joined, Resume, Start, Subscription};
