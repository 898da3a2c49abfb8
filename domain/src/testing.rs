//! Given/when/then for aggregates: `given([events]).when(command).then([events])`.

use crate::{Aggregate, DomainError};

pub struct Given<A: Aggregate> {
    state: A,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let state = events.into_iter().fold(A::default(), |state, event| state.evolve(&event));
    Given { state }
}

pub struct When<A: Aggregate> {
    outcome: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> When<A> {
        When { outcome: self.state.decide(command) }
    }

    /// The events `command` produces, for assertions on their contents.
    #[track_caller]
    pub fn state_after(self, command: A::Command) -> Vec<A::Event> {
        self.state.decide(command).unwrap_or_else(|error| panic!("the command was refused: {error}"))
    }
}

impl<A: Aggregate> When<A> {
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => assert_eq!(events, expected),
            Err(error) => panic!("expected events {expected:?}, the command was refused: {error}"),
        }
    }

    #[track_caller]
    pub fn then_error(self, expected: DomainError) {
        match self.outcome {
            Ok(events) => panic!("expected the error `{expected}`, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }
}
