//! The integration tests, one binary: end to end on the real RabbitMQ and PostgreSQL, each
//! test with its own database and AMQP names (`support`, on the kit shared with the bench and
//! the fault suite), so that they run in parallel and
//! leave nothing behind. One binary links the crate once instead of once per file.

#[path = "../kit/mod.rs"]
mod kit;
mod support;

mod admin;
mod audit;
mod broker;
mod clients;
mod contract;
mod dashboards;
mod delivery;
mod deployment;
mod events;
mod failover;
mod fallback;
mod health;
mod hostile;
mod http_receipts;
mod http_vendors;
mod in_doubt;
mod lanes;
mod layering;
mod limits;
mod logs;
mod receipts;
mod rejection;
mod routing;
mod secrecy;
mod smpp;
mod status_page;
mod store;
mod whatsapp;
