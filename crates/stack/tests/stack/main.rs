//! The stack driven as a user drives it: its built binary started as a command, commands sent
//! from a second terminal (`stack ctl`) and typed into its own terminal (through tmux), the
//! services' answers read over HTTP, and after Ctrl-C every process it ran checked gone.

mod failed_start;
mod outage;
mod readme;
mod support;
mod terminal;
mod walkthrough;
