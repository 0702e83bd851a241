//! Maps a state machine error to the gRPC status of the same name (ARCHITECTURE.md, Design §4).

use percy_statemachine::{CommandError, ErrorKind};
use tonic::{Code, Status};

/// One kind, one code: the state machine already speaks gRPC's vocabulary.
pub fn command_error_to_status(err: CommandError) -> Status {
    let code = match err.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
    };
    Status::new(code, err.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_namesake() {
        let cases = [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::ResourceExhausted, Code::ResourceExhausted),
        ];
        for (kind, code) in cases {
            let status = command_error_to_status(CommandError::new(kind, "why"));
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), "why");
        }
    }
}
