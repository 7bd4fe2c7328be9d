pub mod admin;
pub mod demo;
pub mod engine;
pub mod front;
pub mod load;
pub mod migrate;
pub mod token;
pub mod up;
