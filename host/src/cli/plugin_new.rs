//! `plover plugin new NAME`: a handler project that builds, passes `plover plugin test`, and
//! says what to do next (its README). Templates live in `scaffold/`.

use std::path::PathBuf;
use std::process::ExitCode;

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.txt");
const LIB_RS: &str = include_str!("scaffold/lib.rs.txt");
const README: &str = include_str!("scaffold/README.md.txt");
/// The plover-sdk release a Rust project depends on (the SDK is versioned with the contract).
const SDK_VERSION: &str = "0.2.0";
const SEED: &str = include_str!("scaffold/source.jsonl.txt");
const APP_PY: &str = include_str!("scaffold/app.py.txt");
const README_PYTHON: &str = include_str!("scaffold/README-python.md.txt");
/// A Python project carries the SDK and the contract it builds against.
const PYTHON_SDK: &str = include_str!("../../../sdk/python/plover_sdk/__init__.py");
const WIT: [(&str, &str); 6] = [
    (
        "handler.wit",
        include_str!("../../../wit/v0.2.0/handler.wit"),
    ),
    ("http.wit", include_str!("../../../wit/v0.2.0/http.wit")),
    ("job.wit", include_str!("../../../wit/v0.2.0/job.wit")),
    ("kv.wit", include_str!("../../../wit/v0.2.0/kv.wit")),
    ("sql.wit", include_str!("../../../wit/v0.2.0/sql.wit")),
    ("types.wit", include_str!("../../../wit/v0.2.0/types.wit")),
];

#[derive(clap::Args)]
pub struct PluginNewArgs {
    /// The handler's name: lower-case letters, digits and dashes (also its job kind).
    name: String,
    /// The language of the project.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rust: a local checkout of the plover-sdk crate to depend on (the `sdk/` folder of the
    /// Plover repository); without it the project depends on plover-sdk from crates.io.
    /// A Python project carries its own copy of the SDK.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Python,
}

pub fn plugin_new(args: PluginNewArgs) -> ExitCode {
    match create(&args) {
        Ok(dir) => {
            println!("created {} in {}", args.name, dir.display());
            println!(
                "next: cd {} and follow README.md (build, then plover plugin test)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plover plugin new: {e}");
            ExitCode::from(2)
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn create(args: &PluginNewArgs) -> Result<PathBuf, String> {
    if !valid_name(&args.name) {
        return Err(format!(
            "{:?} is not a handler name: use lower-case letters, digits and dashes, starting with a letter",
            args.name
        ));
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let sdk = match &args.sdk_path {
        Some(p) => {
            let p =
                std::fs::canonicalize(p).map_err(|e| format!("--sdk-path {}: {e}", p.display()))?;
            if !p.join("Cargo.toml").exists() {
                return Err(format!("--sdk-path {}: no Cargo.toml there", p.display()));
            }
            format!("path = {:?}", p.display().to_string())
        }
        None => format!("version = {SDK_VERSION:?}"),
    };
    let fill = |t: &str| {
        t.replace("{{name}}", &args.name)
            .replace("{{file}}", &args.name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
    };
    let write = |rel: &str, text: String| -> Result<(), String> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    match args.lang {
        Lang::Rust => {
            write("Cargo.toml", fill(CARGO_TOML))?;
            write("src/lib.rs", fill(LIB_RS))?;
            write("README.md", fill(README))?;
            write(".gitignore", "/target\n".to_string())?;
        }
        Lang::Python => {
            write("app.py", fill(APP_PY))?;
            write("README.md", fill(README_PYTHON))?;
            write("plover_sdk/__init__.py", PYTHON_SDK.to_string())?;
            for (file, text) in WIT {
                write(&format!("wit/{file}"), text.to_string())?;
            }
            write(".gitignore", "*.wasm\n__pycache__/\n".to_string())?;
        }
    }
    write("seed/source.jsonl", SEED.to_string())?;
    Ok(dir)
}
