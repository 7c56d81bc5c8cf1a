//! The one mapping between the domain ([`crate::domain`]) and the wire
//! (`cloudmart.order.v1`): the enums both ways, the aggregate to its API view.

use cloudmart_platform::proto::order::v1 as pb;

use crate::domain::{LineItem, Order, OrderSource, OrderStatus, QuoteSource};

/// A wire enum value with no domain counterpart (`*_UNSPECIFIED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is unspecified")]
pub struct Unspecified(pub &'static str);

/// `From<domain> for wire` and `TryFrom<wire> for domain` for an enum whose variants have
/// the same names on both sides (the wire's `Unspecified` has none in the domain).
macro_rules! wire_enum {
    ($domain:ident <=> $wire:ty { $($variant:ident),+ $(,)? }) => {
        impl From<$domain> for $wire {
            fn from(v: $domain) -> Self {
                match v {
                    $($domain::$variant => <$wire>::$variant,)+
                }
            }
        }

        impl TryFrom<$wire> for $domain {
            type Error = Unspecified;

            fn try_from(v: $wire) -> Result<Self, Unspecified> {
                match v {
                    $(<$wire>::$variant => Ok($domain::$variant),)+
                    <$wire>::Unspecified => Err(Unspecified(stringify!($domain))),
                }
            }
        }
    };
}

wire_enum!(OrderStatus <=> pb::OrderStatus { Pending, Confirmed, Cancelled });
wire_enum!(OrderSource <=> pb::OrderSource { Regular, TimeSale });
wire_enum!(QuoteSource <=> pb::QuoteSource { DeliveryService, Fallback });

impl From<&LineItem> for pb::OrderItem {
    fn from(i: &LineItem) -> Self {
        pb::OrderItem { sku: i.sku.clone(), quantity: i.quantity, unit_price_cents: i.unit_price_cents }
    }
}

/// Line items as the wire carries them (API view, `OrderPlaced`, quote request).
pub fn items(items: &[LineItem]) -> Vec<pb::OrderItem> {
    items.iter().map(pb::OrderItem::from).collect()
}

/// The API view of an order.
impl From<&Order> for pb::Order {
    fn from(o: &Order) -> Self {
        pb::Order {
            order_id: o.order_id.clone(),
            customer_id: o.customer_id.clone(),
            items: items(&o.items),
            shipping_address: Some(o.shipping_address.to_proto()),
            status: pb::OrderStatus::from(o.status) as i32,
            cancel_reason: o.cancel_reason.clone().unwrap_or_default(),
            source: pb::OrderSource::from(o.origin.source()) as i32,
            time_sale_purchase_id: o.origin.time_sale_purchase_id().unwrap_or_default().to_owned(),
            items_total_cents: o.items_total_cents,
            delivery_fee_cents: o.delivery_fee.cents,
            quote_source: pb::QuoteSource::from(o.delivery_fee.source) as i32,
            created_at: Some(cloudmart_platform::proto_time(o.created_at)),
            updated_at: Some(cloudmart_platform::proto_time(o.updated_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn enums_round_trip_and_unspecified_has_no_domain_value() {
        for s in OrderStatus::iter() {
            assert_eq!(OrderStatus::try_from(pb::OrderStatus::from(s)), Ok(s));
        }
        for s in OrderSource::iter() {
            assert_eq!(OrderSource::try_from(pb::OrderSource::from(s)), Ok(s));
        }
        for s in QuoteSource::iter() {
            assert_eq!(QuoteSource::try_from(pb::QuoteSource::from(s)), Ok(s));
        }
        assert_eq!(pb::OrderStatus::from(OrderStatus::Cancelled), pb::OrderStatus::Cancelled);
        assert_eq!(pb::OrderSource::from(OrderSource::TimeSale), pb::OrderSource::TimeSale);
        assert_eq!(pb::QuoteSource::from(QuoteSource::Fallback), pb::QuoteSource::Fallback);
        assert_eq!(OrderStatus::try_from(pb::OrderStatus::Unspecified), Err(Unspecified("OrderStatus")));
    }
}
