//! `dind-supervisor`: PID 1 of a Docker-in-Docker service container. This
//! file only reads the command line and dispatches; the library
//! (`lib.rs`) holds the layout.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use dind_supervisor::cli::{self, Invocation};
use dind_supervisor::config::Config;
use dind_supervisor::env::ProcessEnv;
use dind_supervisor::{exit, listen_fds, lock, logging, private, service, shared_run, wait};

fn main() -> ExitCode {
    let started = Instant::now();
    // Before anything opens a descriptor of its own.
    let handed = listen_fds::take(&ProcessEnv);
    let invocation = match cli::parse(std::env::args_os().collect(), &ProcessEnv) {
        Ok(i) => i,
        Err(e) => e.exit(),
    };
    match invocation {
        Invocation::Exec(argv) => {
            // Under a lock no other program may take the supervisor's place.
            match proxy::policy::load_image(proxy::policy::IMAGE_FILE) {
                Ok(Some(f)) if f.locked => {
                    exit::refused(lock::refuse_exec(proxy::policy::IMAGE_FILE, &argv[0]))
                }
                Ok(_) => exec(&argv),
                Err(e) => exit::refused(e),
            }
        }
        Invocation::Certs(tls) => {
            logging::init(cli::LogFormat::Text, "info");
            exit::reported(service::certs_only(&tls))
        }
        Invocation::Wait(args) => {
            logging::init(cli::LogFormat::Text, "warn");
            exit::waited(service::client_runtime().block_on(wait::run(&args, &ProcessEnv)))
        }
        Invocation::Health(args) => exit::probed(
            service::client_runtime().block_on(wait::health(args.health_addr, args.timeout)),
        ),
        Invocation::Run {
            settings,
            given,
            dockerd_args,
        } => {
            logging::init(settings.log_format, &settings.log_level);
            for line in &handed.ignored {
                tracing::warn!("{line}");
            }
            let image = match proxy::policy::load_image(proxy::policy::IMAGE_FILE) {
                Ok(f) => f,
                Err(e) => return exit::refused(e),
            };
            let mut config =
                match Config::build(*settings, &given, dockerd_args, &ProcessEnv, image.as_ref()) {
                    Ok(c) => c,
                    Err(e) => return exit::refused(e),
                };
            // A /run shared with another container (ARC) is covered first.
            let own = shared_run::apply(&mut config).map(|p| p.run);
            let dirs = config.private_dirs();
            if let Err(e) = private::ensure(&dirs, config.dockerd.allow_shared, own.as_deref()) {
                return exit::refused(e);
            }
            if config.locked_by.is_some() {
                // Still one thread: nothing reads the environment meanwhile.
                let dropped = lock::scrub_environment();
                tracing::info!(path = lock::LOCKED_PATH, dropped = %dropped.join(","), "locked: children get a clean environment");
            }
            exit::served(service::run(config, handed.sockets, started))
        }
    }
}

fn exec(argv: &[OsString]) -> ExitCode {
    let err = service::exec(argv);
    exit::exec_failed(&argv[0], &err)
}
