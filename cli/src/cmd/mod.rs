pub mod admin;
pub mod demo;
pub mod engine;
