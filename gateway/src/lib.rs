pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod policy;
pub mod routes;
pub mod startup;
