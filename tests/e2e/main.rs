//! meshql end to end: the real binary, a real S3-compatible server on
//! 127.0.0.1, and meshes written to temporary directories.

mod browser;
mod cases;
mod catalog;
mod check;
mod cluster;
mod flight;
mod governance;
mod hardening;
mod iceberg;
mod pg;
mod s3;
mod shell;
mod util;
mod web;
