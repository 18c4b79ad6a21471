"""cart_summary v1 (SQL): one row per cart with its customer, status, quantity and total."""

from projections import Projection, Sql
from projections.shop._cart import CART_COLUMNS, CART_EVENTS, CART_REQUIRES

PROJECTION = Projection(
    name="cart_summary",
    version=1,
    description="One row per cart: customer, status, item quantity, total amount, when it was opened.",
    key=("cart_id",),
    consumes=CART_EVENTS,
    requires=CART_REQUIRES,
    columns=CART_COLUMNS,
    body=Sql(
        """
        WITH lines AS (
            SELECT *,
                CASE event_type WHEN 'ItemAdded' THEN 1 WHEN 'ItemRemoved' THEN -1 END AS sign,
                -- One parse per item event for both fields; strict, so that a price beyond DECIMAL(18,2)
                -- fails (and is then reported as poison) rather than turning into NULL.
                CASE WHEN event_type IN ('ItemAdded', 'ItemRemoved')
                    THEN json_transform_strict(data, '{"quantity": "BIGINT", "unit_price": "DECIMAL(18,2)"}')
                END AS f
            FROM events
        )
        SELECT
            stream_id AS cart_id,
            arg_min(CASE WHEN event_type = 'CartOpened' THEN data->>'customer_id' END, stream_version)
                FILTER (WHERE event_type = 'CartOpened') AS customer_id,
            CASE arg_max(event_type, stream_version) FILTER (WHERE event_type IN ('CartConfirmed', 'CartCancelled'))
                WHEN 'CartConfirmed' THEN 'confirmed' WHEN 'CartCancelled' THEN 'cancelled' ELSE 'open'
            END AS status,
            coalesce(sum(sign * f.quantity), 0) AS item_quantity,
            -- DECIMAL(18,0) × DECIMAL(18,2) multiplies 64-bit integers; BIGINT × DECIMAL(18,2) widens both
            -- to 128 bits first (these sums took 108 ms instead of 68 over 2 M events, measured).
            coalesce(sum(CAST(sign * f.quantity AS DECIMAL(18,0)) * f.unit_price), 0) AS total_amount,
            arg_min(recorded_at, stream_version) FILTER (WHERE event_type = 'CartOpened') AS opened_at,
            arg_max(recorded_at, stream_version) AS last_event_at,
            arg_max(global_position, stream_version) AS last_global_position
        FROM lines
        GROUP BY stream_id
        """
    ),
)
