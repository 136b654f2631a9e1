//! Printing to stdout: `out!` and `outln!`, which end the process quietly when the reader
//! has gone (`nudge-train … | head`) and with an error when stdout fails otherwise.

/// `print!` to stdout; a closed stdout (`nudge-train … | head`) ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => { $crate::print::print_or_exit(format_args!($($arg)*)) };
}

/// `println!` to stdout; a closed stdout ends the process quietly.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::print::print_or_exit(format_args!("{}\n", format_args!($($arg)*))) };
}

/// What became of a write to stdout.
#[derive(Debug, PartialEq)]
enum Printed {
    /// Written.
    Done,
    /// The reader went away: nobody wants the rest.
    ReaderGone,
    /// Any other failure (a full disk behind a redirect).
    Failed(std::io::ErrorKind),
}

/// Writes `args` to `to`, telling a closed pipe from a real failure.
fn print_to(mut to: impl std::io::Write, args: std::fmt::Arguments<'_>) -> Printed {
    match to.write_fmt(args).and_then(|()| to.flush()) {
        Ok(()) => Printed::Done,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Printed::ReaderGone,
        Err(e) => Printed::Failed(e.kind()),
    }
}

/// Prints to stdout. `println!` would panic with a backtrace when the reader has gone;
/// like other command-line tools this exits with success then, and with an error when
/// stdout fails otherwise, so no output is lost silently.
pub(crate) fn print_or_exit(args: std::fmt::Arguments<'_>) {
    match print_to(std::io::stdout().lock(), args) {
        Printed::Done => {}
        Printed::ReaderGone => std::process::exit(0),
        Printed::Failed(kind) => {
            eprintln!("nudge-train: cannot write to stdout: {kind}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Write};

    /// A stdout that fails every write with `kind`.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn printing_tells_a_closed_pipe_from_a_failure() {
        let mut kept = Vec::new();
        assert_eq!(
            print_to(&mut kept, format_args!("{} rows", 3)),
            Printed::Done
        );
        assert_eq!(kept, b"3 rows");
        let closed = Failing(io::ErrorKind::BrokenPipe);
        assert_eq!(print_to(closed, format_args!("x")), Printed::ReaderGone);
        let full = Failing(io::ErrorKind::StorageFull);
        assert_eq!(
            print_to(full, format_args!("x")),
            Printed::Failed(io::ErrorKind::StorageFull)
        );
    }
}
