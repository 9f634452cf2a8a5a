//! What a pingora error means to the gateway, in the few kinds its decisions
//! tell apart (the client's answer, the backend's verdict, a retry), so
//! those decisions are pure functions that tests can feed directly.

use pingora::{Error, ErrorSource, ErrorType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An error raised with an HTTP status: by the gateway (its [`Reject`]
    /// is in the context) or by pingora about the client's request.
    ///
    /// [`Reject`]: crate::reject::Reject
    Status(u16),
    /// The client failed or left.
    Downstream,
    /// The connect to the backend failed (`fail_to_connect` reported it).
    Connect,
    /// Nothing arrived for the read timeout; `upstream`: on the backend side.
    ReadTimeout {
        upstream: bool,
    },
    WriteTimeout,
    /// Anything else: a reset, a broken response, an internal error.
    Other,
}

impl Failure {
    pub fn of(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::HTTPStatus(c) => return Failure::Status(*c),
            _ if e.esource() == &ErrorSource::Downstream => return Failure::Downstream,
            _ => {}
        }
        match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute => Failure::Connect,
            ErrorType::ReadTimedout => Failure::ReadTimeout {
                upstream: e.esource() == &ErrorSource::Upstream,
            },
            ErrorType::WriteTimedout => Failure::WriteTimeout,
            _ => Failure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let up = |t| Failure::of(&Error::new_up(t));
        assert_eq!(up(ErrorType::ConnectRefused), Failure::Connect);
        assert_eq!(
            up(ErrorType::ReadTimedout),
            Failure::ReadTimeout { upstream: true }
        );
        assert_eq!(up(ErrorType::ConnectionClosed), Failure::Other);
        assert_eq!(
            Failure::of(&Error::new_down(ErrorType::ReadTimedout)),
            Failure::Downstream
        );
        assert_eq!(
            Failure::of(&Error::new_down(ErrorType::HTTPStatus(400))),
            Failure::Status(400)
        );
        assert_eq!(
            Failure::of(&Error::new(ErrorType::ReadTimedout)),
            Failure::ReadTimeout { upstream: false }
        );
    }
}
