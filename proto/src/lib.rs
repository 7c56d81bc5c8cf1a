//! The cloudmart contract as Rust types: the gRPC services of order, delivery and
//! time-sale, and the Kafka event payloads, generated from `proto/cloudmart/**`.
//!
//! [`contract`] holds what the `.proto` files cannot say: topics, CloudEvents types,
//! refusal reasons, the error model and field rules, the `Address` value object.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection, so `grpcurl` works with no
//! `.proto` files at hand.
#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod order {
    pub mod v1 {
        tonic::include_proto!("cloudmart.order.v1");
    }
}
pub mod delivery {
    pub mod v1 {
        tonic::include_proto!("cloudmart.delivery.v1");
    }
}
pub mod timesale {
    pub mod v1 {
        tonic::include_proto!("cloudmart.timesale.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("cloudmart.events.v1");
    }
}

pub mod contract;

/// Encoded `FileDescriptorSet` of every cloudmart `.proto` file (with its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloudmart_descriptor.bin"));
