//! Ctrl-C for the commands that change nodes. Before the work is armed (nothing has
//! changed yet) Ctrl-C exits at once, as any command does; after, the first asks the
//! work to stop at its next safe point and a second exits at once, saying `then`.
use kordon::interrupt::Interrupt;

pub fn on_ctrl_c(then: &'static str) -> Interrupt {
    let (edge, interrupt) = Interrupt::channel();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if !edge.is_armed() {
            std::process::exit(130);
        }
        edge.request();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted again: exiting now; {then}");
            std::process::exit(130);
        }
    });
    interrupt
}
