//! The command line, docker's words and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A container engine: run programs in isolated Linux containers",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Directory for all of berth's state (images, containers).
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    pub root: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container
    Run(RunArgs),
    /// List containers
    Ps(PsArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Show the stored record of containers or images as JSON
    Inspect(InspectArgs),
    /// List images
    Images,
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true, disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Container host name (default: the short container id)
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Image to start from
    pub image: String,
    /// Command and arguments (default: the image's command)
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container ids
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (kills it)
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true, value_name = "CONTAINER|IMAGE")]
    pub targets: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a .tar or .tar.gz root filesystem as an image
    Import { file: PathBuf, name: String },
    /// List images
    #[command(alias = "ls")]
    List,
    /// Remove an image
    #[command(alias = "remove")]
    Rm { names: Vec<String> },
}
