//! Deliberate faults for the floor (dropped, duplicated, swapped frames on one
//! socket), so the load generator's loss, duplicate and order checks are tested
//! against a server that really misbehaves.

use tokio_tungstenite::tungstenite::Message;

/// Deliberate faults on one socket's `user_update` frames (counted from 1), so
/// the load generator's loss, duplicate and order checks can be tested.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct Faults {
    /// The socket that gets the faults (0: the first to connect).
    #[arg(long, default_value_t = 0)]
    pub fault_socket: usize,
    /// Drop every Nth frame.
    #[arg(long)]
    pub drop_every: Option<u64>,
    /// Send the Nth frame twice.
    #[arg(long)]
    pub duplicate: Option<u64>,
    /// Send the Nth frame after the one that follows it.
    #[arg(long)]
    pub swap: Option<u64>,
    /// The socket gets every user's updates even when filtered (`?users=`).
    #[arg(long)]
    pub fault_unfiltered: bool,
}

/// Applies [`Faults`] to a socket's frames as they pass.
pub struct FaultState {
    faults: Faults,
    count: u64,
    held: Option<Message>,
}

impl FaultState {
    /// Faults to apply from the first frame on.
    pub fn new(faults: Faults) -> Self {
        Self {
            faults,
            count: 0,
            held: None,
        }
    }

    /// Appends what should be sent for the next frame to `out`.
    pub fn apply(&mut self, frame: Message, out: &mut Vec<Message>) {
        self.count += 1;
        let i = self.count;
        if self
            .faults
            .drop_every
            .is_some_and(|n| n > 0 && i.is_multiple_of(n))
        {
            return;
        }
        if self.faults.swap == Some(i) {
            self.held = Some(frame);
            return;
        }
        if self.faults.duplicate == Some(i) {
            out.push(frame.clone());
        }
        out.push(frame);
        out.extend(self.held.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(faults: Faults, n: u64) -> Vec<String> {
        let mut state = FaultState::new(faults);
        let mut out = Vec::new();
        for i in 1..=n {
            state.apply(Message::text(i.to_string()), &mut out);
        }
        out.iter()
            .map(|m| m.to_text().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn faults_drop_duplicate_and_swap() {
        let faults = Faults {
            fault_socket: 0,
            drop_every: Some(4),
            duplicate: Some(2),
            swap: Some(5),
            fault_unfiltered: false,
        };
        assert_eq!(
            numbered(faults, 9),
            ["1", "2", "2", "3", "6", "5", "7", "9"]
        );
        assert_eq!(numbered(Faults::default(), 3), ["1", "2", "3"]);
    }
}
