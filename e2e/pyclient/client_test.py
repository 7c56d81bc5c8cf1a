#!/usr/bin/env python3
"""A client nobody in this workspace wrote: Python stubs generated from proto/ with the
reference protoc (grpcio-tools), driving a running cloudmart through saga 1, saga 2 and a
flash-sale purchase, and reading error details (google.rpc.ErrorInfo, BadRequest) with the
standard grpcio-status helpers.

    python client_test.py --proto-dir proto --order 127.0.0.1:50051 \
        --delivery 127.0.0.1:50052 --timesale 127.0.0.1:50053

The delivery service must fail scheduling for postal code 99999
(FAULT_DELIVERY_FAIL_POSTAL_CODES=99999), as `make dev` does. Exit 0 only when every check
passed; the last line is "N passed, M failed".
"""
import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
import uuid


def generate(proto_dir, out):
    files = []
    for base, _, names in os.walk(os.path.join(proto_dir, "cloudmart")):
        files += [os.path.relpath(os.path.join(base, n), proto_dir) for n in names if n.endswith(".proto")]
    from grpc_tools import protoc  # noqa: PLC0415 (the venv has it; imported after argument parsing)
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"] + sorted(files)
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {files}")
    sys.path.insert(0, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--order", required=True, help="host:port of OrderService")
    ap.add_argument("--delivery", required=True, help="host:port of DeliveryService")
    ap.add_argument("--timesale", required=True, help="host:port of TimeSaleService")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a saga to settle")
    a = ap.parse_args()

    out = tempfile.mkdtemp(prefix="cloudmart-pyclient-")
    generate(a.proto_dir, out)

    import grpc
    from google.protobuf import timestamp_pb2
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    order_pb2 = importlib.import_module("cloudmart.order.v1.order_pb2")
    order_grpc = importlib.import_module("cloudmart.order.v1.order_pb2_grpc")
    delivery_pb2 = importlib.import_module("cloudmart.delivery.v1.delivery_pb2")
    delivery_grpc = importlib.import_module("cloudmart.delivery.v1.delivery_pb2_grpc")
    ts_pb2 = importlib.import_module("cloudmart.timesale.v1.timesale_pb2")
    ts_grpc = importlib.import_module("cloudmart.timesale.v1.timesale_pb2_grpc")

    orders = order_grpc.OrderServiceStub(grpc.insecure_channel(a.order))
    deliveries = delivery_grpc.DeliveryServiceStub(grpc.insecure_channel(a.delivery))
    sales = ts_grpc.TimeSaleServiceStub(grpc.insecure_channel(a.timesale))
    run = uuid.uuid4().hex[:8]

    def address(postal):
        return order_pb2.ShippingAddress(line1="1 Main St", city="Seoul", postal_code=postal, country="KR")

    def place(customer, postal, key=""):
        req = order_pb2.PlaceOrderRequest(
            customer_id=customer,
            items=[order_pb2.OrderItem(sku="BOOK-1", quantity=2, unit_price_cents=1500)],
            shipping_address=address(postal),
            idempotency_key=key,
        )
        return orders.PlaceOrder(req, timeout=10).order

    def eventually(what, fetch, done):
        deadline = time.monotonic() + a.timeout
        while True:
            value = fetch()
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still {value}")
            time.sleep(0.1)

    def details(err):
        """(code, ErrorInfo or None, BadRequest or None) of a failed call."""
        status = rpc_status.from_call(err)
        info = bad = None
        for d in status.details if status else []:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
            elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                d.Unpack(bad)
        return err.code(), info, bad

    def refused(call):
        try:
            call()
        except grpc.RpcError as err:
            return details(err)
        raise AssertionError("the call succeeded; a refusal was expected")

    def saga1():
        o = place(f"py-{run}", "04524", key=f"py-{run}-1")
        assert o.status == order_pb2.ORDER_STATUS_PENDING, o
        assert o.quote_source == order_pb2.QUOTE_SOURCE_DELIVERY_SERVICE, o
        assert o.items_total_cents == 3000, o
        again = place(f"py-{run}", "04524", key=f"py-{run}-1")
        assert again.order_id == o.order_id, "same idempotency key, same order"
        final = eventually(
            "order confirmed",
            lambda: orders.GetOrder(order_pb2.GetOrderRequest(order_id=o.order_id), timeout=5),
            lambda x: x.status != order_pb2.ORDER_STATUS_PENDING,
        )
        assert final.status == order_pb2.ORDER_STATUS_CONFIRMED, final
        d = deliveries.GetDelivery(delivery_pb2.GetDeliveryRequest(order_id=o.order_id), timeout=5)
        assert d.status == delivery_pb2.DELIVERY_STATUS_SCHEDULED, d
        assert d.scheduled_for.seconds > 0, d

    def saga2():
        o = place(f"py-{run}", "99999")
        final = eventually(
            "order cancelled",
            lambda: orders.GetOrder(order_pb2.GetOrderRequest(order_id=o.order_id), timeout=5),
            lambda x: x.status != order_pb2.ORDER_STATUS_PENDING,
        )
        assert final.status == order_pb2.ORDER_STATUS_CANCELLED, final
        assert final.cancel_reason == "DELIVERY_FAILED", final
        d = deliveries.GetDelivery(delivery_pb2.GetDeliveryRequest(order_id=o.order_id), timeout=5)
        assert d.status == delivery_pb2.DELIVERY_STATUS_FAILED, d
        # A cancelled order cannot be cancelled again: FAILED_PRECONDITION, ErrorInfo INVALID_STATE.
        code, info, _ = refused(lambda: orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=o.order_id, reason="x")))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, code
        assert info is not None and info.reason == "INVALID_STATE", info

    def flash_sale():
        now = int(time.time())
        sale = sales.CreateSale(
            ts_pb2.CreateSaleRequest(
                sku=f"PY-{run}",
                title="Python console",
                price_cents=29900,
                total_stock=1,
                per_customer_limit=1,
                starts_at=timestamp_pb2.Timestamp(seconds=now - 60),
                ends_at=timestamp_pb2.Timestamp(seconds=now + 3600),
            ),
            timeout=10,
        )
        assert sale.remaining_stock == 1, sale

        def buy(customer):
            return sales.Purchase(
                ts_pb2.PurchaseRequest(sale_id=sale.sale_id, customer_id=customer, quantity=1, shipping_address=address("04524")),
                timeout=10,
            ).purchase

        p = buy(f"alice-{run}")
        assert p.status == ts_pb2.PURCHASE_STATUS_RESERVED, p
        code, info, _ = refused(lambda: buy(f"alice-{run}"))
        assert (code, info.reason if info else None) == (grpc.StatusCode.FAILED_PRECONDITION, "LIMIT_EXCEEDED"), (code, info)
        code, info, _ = refused(lambda: buy(f"bob-{run}"))
        assert (code, info.reason if info else None) == (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT"), (code, info)
        ordered = eventually(
            "purchase ordered",
            lambda: sales.GetPurchase(ts_pb2.GetPurchaseRequest(purchase_id=p.purchase_id), timeout=5),
            lambda x: x.status != ts_pb2.PURCHASE_STATUS_RESERVED,
        )
        assert ordered.status == ts_pb2.PURCHASE_STATUS_ORDERED, ordered
        o = orders.GetOrder(order_pb2.GetOrderRequest(order_id=ordered.order_id), timeout=5)
        assert o.source == order_pb2.ORDER_SOURCE_TIME_SALE, o
        assert o.time_sale_purchase_id == p.purchase_id, o

    def invalid_input():
        # Malformed input: INVALID_ARGUMENT with a BadRequest naming the field.
        code, _, bad = refused(lambda: place("", "04524"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
        fields = [v.field for v in bad.field_violations] if bad else []
        assert "customer_id" in fields, fields
        # A NUL character (PostgreSQL cannot store it) is refused by validation, naming the field.
        code, _, bad = refused(lambda: place("nul\x00customer", "04524"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
        assert [v.field for v in bad.field_violations] == ["customer_id"], bad
        code, _, bad = refused(lambda: orders.GetOrder(order_pb2.GetOrderRequest(order_id="not-a-uuid"), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
        code, _, _ = refused(lambda: orders.GetOrder(order_pb2.GetOrderRequest(order_id=str(uuid.uuid4())), timeout=5))
        assert code == grpc.StatusCode.NOT_FOUND, code

    checks = [("saga 1: order confirmed", saga1), ("saga 2: compensation", saga2),
              ("flash sale purchase ordered", flash_sale), ("invalid input named", invalid_input)]
    passed = failed = 0
    for name, check in checks:
        try:
            check()
            passed += 1
            print(f"ok     {name}", flush=True)
        except Exception:  # noqa: BLE001 (every failure is reported, then counted)
            failed += 1
            print(f"FAILED {name}\n{traceback.format_exc()}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
