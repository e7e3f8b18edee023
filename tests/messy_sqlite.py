"""SQLite files the way real ones are: loose types, broken rules, awkward names."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE "order" ("select" TEXT PRIMARY KEY, "from" VARCHAR(20), "where" INTEGER);
CREATE TABLE "group" (id INTEGER PRIMARY KEY, "user" TEXT NOT NULL, "limit" REAL);
CREATE TABLE people (
    id INTEGER PRIMARY KEY, name TEXT, email VARCHAR(80), is_active BOOLEAN,
    created_at DATETIME, birthday DATE, profile JSON, nickname TEXT, photo BLOB
);
CREATE UNIQUE INDEX ux_people_email ON people (email);
CREATE INDEX ix_people_name ON people (name);
CREATE INDEX ix_people_active_partial ON people (name) WHERE is_active = 1;
CREATE TABLE departments (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    head_id INTEGER REFERENCES employees (id)
);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    department_id INTEGER REFERENCES departments (id),
    manager_id INTEGER REFERENCES employees (id),
    salary NUMERIC(10, 2)
);
CREATE TABLE purchases (
    id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people (id),
    amount NUMERIC(10, 2), paid_at TIMESTAMP, quantity INTEGER, code VARCHAR(5)
);
CREATE INDEX ix_purchases_person ON purchases (person_id);
CREATE TABLE courses (code TEXT PRIMARY KEY, title TEXT) WITHOUT ROWID;
CREATE TABLE enrollments (
    person_id INTEGER REFERENCES people (id), course_code TEXT REFERENCES courses (code),
    grade NUMERIC(3, 1), PRIMARY KEY (person_id, course_code)
);
CREATE TABLE event_log (at DATETIME, level TEXT, message TEXT);
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
CREATE TABLE untyped (id INTEGER PRIMARY KEY, a, b, c);
CREATE TABLE settings (key TEXT PRIMARY KEY, value JSON) WITHOUT ROWID;
CREATE TABLE prices (id INTEGER PRIMARY KEY, price NUMERIC(10, 2), ratio DOUBLE);
"""

DATETIMES = [
    "2024-01-02 03:04:05",
    "2024-01-02T03:04:05Z",
    "2024-01-02 03:04:05.123456",
    "2024-01-02T05:04:05+02:00",
    "2024-03-10",
    1_704_164_645,
    None,
]
BOOLEANS = [0, 1, "true", "false", "t", "f", "TRUE", None]
NAMES = ["Zoë", "José", "Łukasz", "李雷", "Ægir", "O'Brien", 'say "hi"', "", None, "🙂 emoji"]


def build_messy(path: Path, filler_tables: int = 10) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    rng = random.Random(7)
    conn.executemany(
        'INSERT INTO "order" VALUES (?, ?, ?)',
        [("alpha", "x", 1), ("beta", "", None), ("Gamma", None, 3), ("δέλτα", "uni", 4)],
    )
    conn.executemany(
        'INSERT INTO "group" VALUES (?, ?, ?)', [(1, "a", 0.5), (2, "b", None), (3, "c", 1e-7)]
    )
    people = []
    for i in range(1, 61):
        people.append(
            (
                i,
                NAMES[i % len(NAMES)],
                f"p{i}@example.com" if i % 7 else None,
                BOOLEANS[i % len(BOOLEANS)],
                DATETIMES[i % len(DATETIMES)],
                f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}",
                '{"b": 1, "a": [1, 2, {"x": null}], "s": "ü"}' if i % 3 else None,
                "" if i % 4 == 0 else None if i % 4 == 1 else f"nick{i}",
                bytes([i % 256, 0, 255]) if i % 5 == 0 else None,
            )
        )
    conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", people)
    # A cycle (departments <-> employees) and a self-reference (manager_id).
    conn.executemany(
        "INSERT INTO departments VALUES (?, ?, ?)",
        [(1, "Cuts", 1), (2, "Color", 3), (3, "Ops", None)],
    )
    conn.executemany(
        "INSERT INTO employees VALUES (?, ?, ?, ?, ?)",
        [
            (1, "Ana", 1, None, 5200.5),
            (2, "Ben", 1, 1, 4100),
            (3, "Cy", 2, 1, "3999.99"),
            (4, "Di", 2, 3, 4100.1),
        ],
    )
    purchases = []
    amounts = [19.99, 5, 0.1, 100.25, "42.50", 7.5]
    for i in range(1, 201):
        person = i % 60 + 1 if i % 50 else 999 + i  # orphans: people 1049, 1099, ...
        purchases.append(
            (
                i,
                person,
                amounts[i % len(amounts)],
                DATETIMES[i % (len(DATETIMES) - 1)],
                i % 9,
                f"C{i % 100}",
            )
        )
    purchases.append((201, 1, 12.345, "2024-05-05 10:00:00", 2.5, "TOOLONGCODE"))  # must widen
    conn.executemany("INSERT INTO purchases VALUES (?, ?, ?, ?, ?, ?)", purchases)
    conn.executemany(
        "INSERT INTO courses VALUES (?, ?)", [("MATH-1", "Algebra"), ("ART", "Färben"), ("bio", "")]
    )
    conn.executemany(
        "INSERT INTO enrollments VALUES (?, ?, ?)",
        [(1, "MATH-1", 3.5), (1, "ART", 4), (2, "ART", None), (3, "GONE", 2.0)],  # orphan course
    )
    conn.executemany(
        "INSERT INTO event_log VALUES (?, ?, ?)",
        [(DATETIMES[i % 6], ["info", "warn"][i % 2], f"event {i % 4}") for i in range(30)],
    )
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?)",
        [(1, "plain"), (2, "has\x00nul"), (3, "tab\tnewline\n"), (4, ""), (5, None)],
    )
    conn.executemany(
        "INSERT INTO untyped VALUES (?, ?, ?, ?)",
        [(1, 1, 1.5, "x"), (2, 2, 2, 3), (3, None, 3.25, None)],
    )
    conn.executemany(
        "INSERT INTO settings VALUES (?, ?)",
        [("theme", '{"dark": true}'), ("limits", "[1, 2.5, null]"), ("empty", "{}")],
    )
    conn.executemany(
        "INSERT INTO prices VALUES (?, ?, ?)",
        [(i, rng.randint(1, 99_999) / 100, rng.random()) for i in range(1, 101)],
    )
    for t in range(filler_tables):
        conn.execute(
            f"CREATE TABLE filler_{t:02d} (id INTEGER PRIMARY KEY, "
            "person_id INTEGER REFERENCES people (id), label TEXT, at DATETIME)"
        )
        conn.executemany(
            f"INSERT INTO filler_{t:02d} VALUES (?, ?, ?, ?)",
            [(i, i % 60 + 1, f"row {i}", "2023-12-31 23:59:59") for i in range(1, 21)],
        )
    conn.commit()
    conn.close()


def build_large(path: Path, rows: int) -> None:
    """One big table (and a small parent) for resumability and the benchmark."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE shops (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE bookings (
            id INTEGER PRIMARY KEY, shop_id INTEGER NOT NULL REFERENCES shops (id),
            customer TEXT, starts_at DATETIME, price NUMERIC(10, 2), paid BOOLEAN, notes TEXT
        );
        CREATE INDEX ix_bookings_shop ON bookings (shop_id);
        """
    )
    conn.executemany("INSERT INTO shops VALUES (?, ?)", [(i, f"shop {i}") for i in range(1, 51)])
    rng = random.Random(1)

    def generate() -> object:
        for i in range(1, rows + 1):
            yield (
                i,
                i % 50 + 1,
                f"customer {rng.randint(1, 100_000)}",
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
                rng.randint(500, 20_000) / 100,
                i % 2,
                None if i % 3 else "regular",
            )

    conn.executemany("INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?)", generate())  # type: ignore[arg-type]
    conn.commit()
    conn.close()


# A file shaped like BookedBarber's own SQLite database: 33 tables as SQLAlchemy emits
# them for SQLite (named constraints, VARCHAR and composite keys, an FK cycle, JSON,
# legacy NULLs, mixed datetime styles, orphans, reserved words, a 57+ character name).
LONG = "marketing_campaign_recipient_engagement_tracking_events_log"  # 59 characters
BACKEND = f"""
CREATE TABLE organizations (
    id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, slug VARCHAR(100) NOT NULL,
    settings JSON, created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
    CONSTRAINT pk_organizations PRIMARY KEY (id), CONSTRAINT uq_organizations_slug UNIQUE (slug)
);
CREATE TABLE barbershop_locations (
    id INTEGER NOT NULL, organization_id INTEGER, owner_id INTEGER, name VARCHAR(200) NOT NULL,
    timezone VARCHAR(64) DEFAULT 'UTC' NOT NULL, latitude FLOAT, longitude FLOAT,
    opened_on DATE, is_active BOOLEAN DEFAULT 1 NOT NULL,
    CONSTRAINT pk_barbershop_locations PRIMARY KEY (id),
    CONSTRAINT fk_barbershop_locations_organization_id_organizations FOREIGN KEY(organization_id)
        REFERENCES organizations (id),
    CONSTRAINT fk_barbershop_locations_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id)
);
CREATE TABLE users (
    id INTEGER NOT NULL, email VARCHAR(255) NOT NULL, name VARCHAR(200) NOT NULL,
    unified_role VARCHAR(10) DEFAULT 'client' NOT NULL, phone VARCHAR(32),
    primary_location_id INTEGER, is_active BOOLEAN NOT NULL, preferences JSON,
    created_at DATETIME NOT NULL, last_login_at DATETIME, avatar BLOB,
    CONSTRAINT pk_users PRIMARY KEY (id), CONSTRAINT uq_users_email UNIQUE (email),
    CONSTRAINT fk_users_primary_location_id_barbershop_locations FOREIGN KEY(primary_location_id)
        REFERENCES barbershop_locations (id)
);
CREATE INDEX ix_users_primary_location_id ON users (primary_location_id);
CREATE TABLE user_organizations (
    user_id INTEGER NOT NULL, organization_id INTEGER NOT NULL, role VARCHAR(7) NOT NULL,
    joined_at DATETIME,
    CONSTRAINT pk_user_organizations PRIMARY KEY (user_id, organization_id),
    CONSTRAINT fk_user_organizations_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT fk_user_organizations_organization_id_organizations FOREIGN KEY(organization_id)
        REFERENCES organizations (id)
);
CREATE TABLE stripe_accounts (
    id VARCHAR(64) NOT NULL, user_id INTEGER NOT NULL, charges_enabled BOOLEAN, details JSON,
    CONSTRAINT pk_stripe_accounts PRIMARY KEY (id),
    CONSTRAINT fk_stripe_accounts_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE services (
    id INTEGER NOT NULL, location_id INTEGER NOT NULL, name VARCHAR(120) NOT NULL,
    duration_minutes INTEGER NOT NULL, price NUMERIC(10, 2) NOT NULL, description TEXT,
    CONSTRAINT pk_services PRIMARY KEY (id),
    CONSTRAINT fk_services_location_id_barbershop_locations FOREIGN KEY(location_id)
        REFERENCES barbershop_locations (id)
);
CREATE TABLE barber_services (
    barber_id INTEGER NOT NULL, service_id INTEGER NOT NULL, custom_price NUMERIC(10, 2),
    CONSTRAINT pk_barber_services PRIMARY KEY (barber_id, service_id),
    CONSTRAINT fk_barber_services_barber_id_users FOREIGN KEY(barber_id) REFERENCES users (id),
    CONSTRAINT fk_barber_services_service_id_services FOREIGN KEY(service_id)
        REFERENCES services (id)
);
CREATE TABLE barber_availability (
    id INTEGER NOT NULL, barber_id INTEGER NOT NULL, weekday SMALLINT NOT NULL,
    starts TIME NOT NULL, ends TIME NOT NULL,
    CONSTRAINT pk_barber_availability PRIMARY KEY (id),
    CONSTRAINT fk_barber_availability_barber_id_users FOREIGN KEY(barber_id) REFERENCES users (id)
);
CREATE TABLE appointments (
    id INTEGER NOT NULL, user_id INTEGER, barber_id INTEGER NOT NULL,
    service_id INTEGER NOT NULL, location_id INTEGER NOT NULL, start_time DATETIME NOT NULL,
    end_time DATETIME NOT NULL, appointment_date DATE, status VARCHAR(11) DEFAULT 'pending'
    NOT NULL, notes TEXT, version INTEGER DEFAULT 1 NOT NULL, created_at DATETIME,
    CONSTRAINT pk_appointments PRIMARY KEY (id),
    CONSTRAINT fk_appointments_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT fk_appointments_barber_id_users FOREIGN KEY(barber_id) REFERENCES users (id),
    CONSTRAINT fk_appointments_service_id_services FOREIGN KEY(service_id)
        REFERENCES services (id),
    CONSTRAINT fk_appointments_location_id_barbershop_locations FOREIGN KEY(location_id)
        REFERENCES barbershop_locations (id)
);
CREATE INDEX ix_appointments_barber_id_start_time ON appointments (barber_id, start_time);
CREATE TABLE payments (
    id INTEGER NOT NULL, user_id INTEGER NOT NULL, appointment_id INTEGER, location_id INTEGER,
    amount NUMERIC(10, 2) NOT NULL, status VARCHAR(9) NOT NULL, idempotency_key VARCHAR(64),
    created_at DATETIME NOT NULL, stripe_payload JSON,
    CONSTRAINT pk_payments PRIMARY KEY (id),
    CONSTRAINT uq_payments_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT fk_payments_user_id_users FOREIGN KEY(user_id) REFERENCES users (id),
    CONSTRAINT fk_payments_appointment_id_appointments FOREIGN KEY(appointment_id)
        REFERENCES appointments (id)
);
CREATE INDEX ix_payments_appointment_id ON payments (appointment_id);
CREATE TABLE payouts (
    id INTEGER NOT NULL, barber_id INTEGER NOT NULL, amount NUMERIC(10, 2) NOT NULL,
    status VARCHAR(7) NOT NULL, period_start DATE, period_end DATE, paid_at DATETIME,
    CONSTRAINT pk_payouts PRIMARY KEY (id),
    CONSTRAINT fk_payouts_barber_id_users FOREIGN KEY(barber_id) REFERENCES users (id)
);
CREATE TABLE reviews (
    id INTEGER NOT NULL, appointment_id INTEGER NOT NULL, rating SMALLINT NOT NULL,
    comment TEXT, created_at DATETIME,
    CONSTRAINT pk_reviews PRIMARY KEY (id),
    CONSTRAINT fk_reviews_appointment_id_appointments FOREIGN KEY(appointment_id)
        REFERENCES appointments (id)
);
CREATE TABLE notifications (
    id INTEGER NOT NULL, user_id INTEGER NOT NULL, channel VARCHAR(5) NOT NULL,
    payload JSON, sent_at DATETIME, read BOOLEAN,
    CONSTRAINT pk_notifications PRIMARY KEY (id),
    CONSTRAINT fk_notifications_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE notification_preferences (
    user_id INTEGER NOT NULL, channel VARCHAR(5) NOT NULL, enabled BOOLEAN DEFAULT 1 NOT NULL,
    CONSTRAINT pk_notification_preferences PRIMARY KEY (user_id, channel),
    CONSTRAINT fk_notification_preferences_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE coupons (
    code VARCHAR(32) NOT NULL, percent_off NUMERIC(5, 2), valid_until DATE, max_uses INTEGER,
    CONSTRAINT pk_coupons PRIMARY KEY (code)
);
CREATE TABLE coupon_redemptions (
    id INTEGER NOT NULL, coupon_code VARCHAR(32) NOT NULL, payment_id INTEGER,
    redeemed_at DATETIME,
    CONSTRAINT pk_coupon_redemptions PRIMARY KEY (id),
    CONSTRAINT fk_coupon_redemptions_coupon_code_coupons FOREIGN KEY(coupon_code)
        REFERENCES coupons (code),
    CONSTRAINT fk_coupon_redemptions_payment_id_payments FOREIGN KEY(payment_id)
        REFERENCES payments (id)
);
CREATE TABLE gift_certificates (
    id CHAR(32) NOT NULL, purchaser_id INTEGER, balance NUMERIC(10, 2), expires_on DATE,
    CONSTRAINT pk_gift_certificates PRIMARY KEY (id),
    CONSTRAINT fk_gift_certificates_purchaser_id_users FOREIGN KEY(purchaser_id)
        REFERENCES users (id)
);
CREATE TABLE client_notes (
    id INTEGER NOT NULL, client_id INTEGER NOT NULL, barber_id INTEGER NOT NULL, body TEXT,
    CONSTRAINT pk_client_notes PRIMARY KEY (id),
    CONSTRAINT fk_client_notes_client_id_users FOREIGN KEY(client_id) REFERENCES users (id),
    CONSTRAINT fk_client_notes_barber_id_users FOREIGN KEY(barber_id) REFERENCES users (id)
);
CREATE TABLE products (
    id INTEGER NOT NULL, location_id INTEGER, sku VARCHAR(40) NOT NULL, name VARCHAR(200),
    price NUMERIC(10, 2), attributes JSON,
    CONSTRAINT pk_products PRIMARY KEY (id), CONSTRAINT uq_products_sku UNIQUE (sku)
);
CREATE TABLE product_variants (
    product_id INTEGER NOT NULL, variant VARCHAR(40) NOT NULL, stock INTEGER DEFAULT 0,
    CONSTRAINT pk_product_variants PRIMARY KEY (product_id, variant),
    CONSTRAINT fk_product_variants_product_id_products FOREIGN KEY(product_id)
        REFERENCES products (id)
);
CREATE TABLE orders (
    id INTEGER NOT NULL, user_id INTEGER, total NUMERIC(10, 2), placed_at DATETIME,
    CONSTRAINT pk_orders PRIMARY KEY (id),
    CONSTRAINT fk_orders_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL, line SMALLINT NOT NULL, product_id INTEGER, quantity INTEGER,
    unit_price NUMERIC(10, 2),
    CONSTRAINT pk_order_items PRIMARY KEY (order_id, line),
    CONSTRAINT fk_order_items_order_id_orders FOREIGN KEY(order_id) REFERENCES orders (id),
    CONSTRAINT fk_order_items_product_id_products FOREIGN KEY(product_id) REFERENCES products (id)
);
CREATE TABLE inventory_movements (
    id INTEGER NOT NULL, product_id INTEGER NOT NULL, delta INTEGER NOT NULL, reason TEXT,
    moved_at DATETIME,
    CONSTRAINT pk_inventory_movements PRIMARY KEY (id),
    CONSTRAINT fk_inventory_movements_product_id_products FOREIGN KEY(product_id)
        REFERENCES products (id)
);
CREATE TABLE webhook_endpoints (
    id INTEGER NOT NULL, url VARCHAR(500) NOT NULL, secret VARCHAR(64), created_by VARCHAR(36),
    events JSON,
    CONSTRAINT pk_webhook_endpoints PRIMARY KEY (id),
    CONSTRAINT fk_webhook_endpoints_created_by_users FOREIGN KEY(created_by) REFERENCES users (id)
);
CREATE TABLE webhook_deliveries (
    id INTEGER NOT NULL, endpoint_id INTEGER NOT NULL, status_code SMALLINT, body TEXT,
    delivered_at DATETIME,
    CONSTRAINT pk_webhook_deliveries PRIMARY KEY (id),
    CONSTRAINT fk_webhook_deliveries_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id)
        REFERENCES webhook_endpoints (id)
);
CREATE TABLE api_keys (
    id INTEGER NOT NULL, user_id INTEGER NOT NULL, key_hash CHAR(64) NOT NULL, scopes JSON,
    expires_at DATETIME, revoked BOOLEAN DEFAULT 0,
    CONSTRAINT pk_api_keys PRIMARY KEY (id), CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash),
    CONSTRAINT fk_api_keys_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE audit_logs (
    id INTEGER NOT NULL, actor_id INTEGER, action VARCHAR(50) NOT NULL, entity VARCHAR(50),
    entity_id BIGINT, changes JSON, at DATETIME NOT NULL,
    CONSTRAINT pk_audit_logs PRIMARY KEY (id)
);
CREATE TABLE sessions (
    token VARCHAR(64) NOT NULL, user_id INTEGER NOT NULL, data BLOB, expires_at DATETIME,
    CONSTRAINT pk_sessions PRIMARY KEY (token),
    CONSTRAINT fk_sessions_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE feature_flags (
    "key" VARCHAR(64) NOT NULL, enabled BOOLEAN NOT NULL, rollout FLOAT, rules JSON,
    CONSTRAINT pk_feature_flags PRIMARY KEY ("key")
);
CREATE TABLE waitlist_entries (
    id INTEGER NOT NULL, user_id INTEGER, location_id INTEGER, "order" INTEGER,
    "desc" TEXT, wanted_on DATE,
    CONSTRAINT pk_waitlist_entries PRIMARY KEY (id),
    CONSTRAINT fk_waitlist_entries_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE recurring_series (
    id INTEGER NOT NULL, first_appointment_id INTEGER, rule TEXT, every_days INTEGER,
    until DATE,
    CONSTRAINT pk_recurring_series PRIMARY KEY (id),
    CONSTRAINT fk_recurring_series_first_appointment_id_appointments
        FOREIGN KEY(first_appointment_id) REFERENCES appointments (id)
);
CREATE TABLE {LONG} (
    id INTEGER NOT NULL, user_id INTEGER NOT NULL, event VARCHAR(20), at DATETIME,
    CONSTRAINT pk_{LONG} PRIMARY KEY (id),
    FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
"""
STYLES = [
    "2024-{m:02d}-{d:02d} {h:02d}:{mi:02d}:00.000000",  # SQLAlchemy's own
    "2024-{m:02d}-{d:02d} {h:02d}:{mi:02d}:00",
    "2024-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:00Z",
    "2024-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:00+01:00",
]


def _when(i: int, style: int | None = None) -> str:
    fmt = STYLES[i % len(STYLES) if style is None else style]
    return fmt.format(m=1 + i % 12, d=1 + i % 28, h=i % 24, mi=i % 60)


def build_backend(path: Path, appointments: int = 2_000) -> int:
    """The backend-shaped file; most rows in appointments, payments and audit_logs.

    Returns the number of rows written."""
    conn = sqlite3.connect(path)
    conn.executescript(BACKEND)
    rng = random.Random(11)
    n_users = max(50, appointments // 10)
    rows: dict[str, list[tuple[object, ...]]] = {}
    rows["organizations"] = [
        (i, f"Org {i}", f"org-{i}", '{"plan": "pro", "seats": 5}' if i % 2 else None, _when(i))
        for i in range(1, 6)
    ]
    # The FK cycle: locations -> users (owner) and users -> locations (primary location).
    rows["barbershop_locations"] = [
        (i, 1 + i % 5, i, f"Shop {i}", "Europe/Paris", 48.85 + i / 100, 2.35, "2020-01-01", 1)
        for i in range(1, 11)
    ]
    rows["users"] = [
        (
            i,
            f"user{i}@example.com",
            NAMES[i % len(NAMES)] or f"User {i}",
            ("client", "barber", "shop_owner")[i % 3],
            None if i % 4 else f"+33 6 {i:08d}",
            1 + i % 10 if i % 7 else None,
            i % 2,
            '{"lang": "fr", "sms": true}' if i % 3 else None,  # legacy NULLs
            _when(i),
            None if i % 5 else _when(i + 1, 1),
            bytes([i % 256, 0, 255]) if i % 11 == 0 else None,
        )
        for i in range(1, n_users + 1)
    ]
    rows["user_organizations"] = [(i, 1 + i % 5, "member", _when(i, 1)) for i in range(1, 40)]
    rows["stripe_accounts"] = [
        (f"acct_{i:016x}", i, i % 2, '{"country": "FR"}') for i in range(1, 20)
    ]
    rows["services"] = [
        (i, 1 + i % 10, f"Cut {i}", 30 + i % 4 * 15, ("19.99", 25, 32.5, 40.0)[i % 4], None)
        for i in range(1, 31)
    ]
    rows["barber_services"] = [
        (b, s, None if s % 2 else 21.5) for b in (3, 6, 9) for s in (1, 2, 3)
    ]
    rows["barber_availability"] = [
        (i, 3 * (1 + i % 10), i % 7, "09:00:00", "17:30:00") for i in range(1, 30)
    ]
    rows["appointments"] = []
    rows["payments"] = []
    for i in range(1, appointments + 1):
        start = _when(i)
        rows["appointments"].append(
            (
                i,
                None if i % 97 == 0 else 1 + i % n_users,
                3 * (1 + i % 10),
                1 + i % 30,
                1 + i % 10,
                start,
                start,  # same style, same instant: zero-length but a valid range
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                ("completed", "cancelled", "no_show")[i % 3],
                None if i % 3 else f"note {i}",
                1,
                _when(i, 0),
            )
        )
        rows["payments"].append(
            (
                i,
                1 + i % n_users,
                i,
                1 + i % 10,
                rng.randint(500, 20_000) / 100,
                "completed",
                f"idem-{i}" if i % 2 else None,
                _when(i),
                '{"id": "ch_1", "amount": 1999}' if i % 5 == 0 else None,
            )
        )
    rows["payouts"] = [
        (i, 3, "120.50", "paid", "2024-01-01", "2024-01-07", _when(i)) for i in range(1, 20)
    ]
    rows["reviews"] = [
        (i, i, 1 + i % 5, "Great" if i % 2 else None, _when(i)) for i in range(1, 50)
    ]
    rows["notifications"] = [
        (i, 1 + i % n_users, ("sms", "email")[i % 2], '{"t": "reminder"}', _when(i), i % 2)
        for i in range(1, appointments // 4 + 2)
    ]
    rows["notification_preferences"] = [(u, "sms", u % 2) for u in range(1, 30)]
    rows["coupons"] = [(f"SAVE{i}", 10 + i, "2025-12-31", 100) for i in range(1, 10)]
    rows["coupon_redemptions"] = [(i, f"SAVE{1 + i % 9}", i, _when(i)) for i in range(1, 20)]
    rows["coupon_redemptions"].append((20, "GONE", None, _when(20)))  # orphan (VARCHAR key)
    rows["gift_certificates"] = [(f"{i:032x}", i, 50, "2025-06-30") for i in range(1, 10)]
    rows["client_notes"] = [(i, i, 3, "likes a fade\nshort sides") for i in range(1, 20)]
    rows["products"] = [
        (i, 1 + i % 10, f"SKU-{i}", f"Pomade {i}", 12.5, '{"size": "100ml"}') for i in range(1, 15)
    ]
    rows["product_variants"] = [(p, v, p * 2) for p in range(1, 15) for v in ("S", "L")]
    rows["orders"] = [(i, 1 + i % n_users, "25.00", _when(i)) for i in range(1, 40)]
    rows["order_items"] = [
        (o, line, 1 + o % 14, line, 12.5) for o in range(1, 40) for line in (1, 2)
    ]
    rows["inventory_movements"] = [
        (i, 1 + i % 14, -1 if i % 2 else 5, None, _when(i)) for i in range(1, 60)
    ]
    # A VARCHAR column referencing an INTEGER key, as the real created_by does.
    rows["webhook_endpoints"] = [
        (i, f"https://hooks.example.com/{i}", f"whsec_{i}", str(i), '["payment.completed"]')
        for i in range(1, 6)
    ]
    rows["webhook_deliveries"] = [
        (i, 1 + i % 5, 200, '{"ok": true}', _when(i)) for i in range(1, 60)
    ]
    rows["api_keys"] = [(i, i, f"{i:064x}", '["read"]', None, 0) for i in range(1, 10)]
    rows["audit_logs"] = [
        (
            i,
            1 + i % n_users,
            "update",
            "appointment",
            i,
            '{"status": ["pending", "completed"]}',
            _when(i),
        )
        for i in range(1, appointments // 2 + 2)
    ]
    rows["sessions"] = [(f"tok{i:08d}", i, b"\x80\x04}", _when(i)) for i in range(1, 20)]
    rows["feature_flags"] = [
        ("new_checkout", 1, 0.25, '{"countries": ["FR"]}'),
        ("dark", 0, None, None),
    ]
    rows["waitlist_entries"] = [(i, i, 1, i, "any time", "2024-05-01") for i in range(1, 10)]
    rows["recurring_series"] = [(i, i, "FREQ=WEEKLY", 7, "2024-12-31") for i in range(1, 10)]
    rows[LONG] = [(i, 1 + i % n_users, "opened", _when(i)) for i in range(1, 30)]
    rows[LONG].append((30, n_users + 500, "clicked", _when(30)))  # orphan on the long-named table
    rows["alembic_version"] = [("0003",)]
    total = 0
    for table, values in rows.items():
        marks = ", ".join("?" for _ in values[0])
        conn.executemany(f'INSERT INTO "{table}" VALUES ({marks})', values)
        total += len(values)
    conn.commit()
    conn.close()
    return total


# One-off oddities real SQLite files hold: (name, SQL on the source, what the default run
# reports, what --strict names).
ODDITIES = [
    (
        "empty-json",
        "UPDATE users SET preferences = '' WHERE id = 5",
        "users.preferences: declared jsonb holds 1 values",
        "users.preferences at key 5: value ''",
    ),
    (
        "invalid-json",
        "UPDATE organizations SET settings = '{oops' WHERE id = 2",
        "organizations.settings: declared jsonb holds 1 values",
        "organizations.settings at key 2: value '{oops'",
    ),
    (
        "empty-date",
        "UPDATE appointments SET appointment_date = '' WHERE id = 7",
        "appointments.appointment_date: declared date holds 1 values",
        "appointments.appointment_date at key 7: value ''",
    ),
    (
        "empty-datetime",
        "UPDATE appointments SET created_at = '' WHERE id = 8",
        "appointments.created_at: declared timestamptz holds 1 values",
        "appointments.created_at at key 8: value ''",
    ),
    (
        "invalid-date",
        "UPDATE payouts SET period_start = '2024-02-30' WHERE id = 3",
        "payouts.period_start: declared date holds 1 values",
        "payouts.period_start at key 3: value '2024-02-30'",
    ),
    (
        "invalid-utf8-text",
        "UPDATE client_notes SET body = CAST(x'66ff6f' AS TEXT) WHERE id = 4",
        "created as bytea",
        "client_notes.body at key 4: value 'f\\udcffo'",
    ),
    (
        "invalid-utf8-blob",
        "UPDATE client_notes SET body = x'c328' WHERE id = 5",
        "client_notes.body: declared text holds 1 values",
        "client_notes.body at key 5: value b'\\xc3('",
    ),
    (
        "nul-in-text",
        "UPDATE reviews SET comment = 'a' || char(0) || 'b' WHERE id = 3",
        "reviews.comment: declared text holds 1 values that do not fit text (e.g. 'a\\x00b': text",
        "reviews.comment at key 3: value 'a\\x00b'",
    ),
    (
        "text-in-integer",
        "UPDATE services SET duration_minutes = 'forty' WHERE id = 6",
        "services.duration_minutes: declared bigint holds 1 values",
        "services.duration_minutes at key 6: value 'forty'",
    ),
    (
        "fraction-in-integer",
        "UPDATE product_variants SET stock = 2.5 WHERE product_id = 1 AND variant = 'S'",
        "created as numeric",
        "product_variants.stock at key (1, 'S'): value 2.5",
    ),
    (
        "true-in-boolean",
        "UPDATE users SET is_active = 'true' WHERE id = 9",
        "users.is_active: 1 values read into boolean",
        "users.is_active at key 9: value 'true'",
    ),
    (
        "epoch-in-datetime",
        "UPDATE appointments SET created_at = 1704164645 WHERE id = 10",
        "appointments.created_at: 1 values read into timestamptz",
        "appointments.created_at at key 10: value 1704164645",
    ),
    (
        "infinity-in-numeric",
        "UPDATE payments SET amount = 9e999 WHERE id = 11",
        "payments.amount: declared numeric(10, 2) holds 1 values",
        "payments.amount at key 11: value inf",
    ),
    (
        "float-noise-in-money",
        "UPDATE payments SET amount = 0.1 + 0.2 WHERE id = 12",
        "payments.amount: declared numeric(10, 2) holds 1 values",
        "payments.amount at key 12: value 0.30000000000000004",
    ),
    (
        "nul-in-datetime",
        "UPDATE orders SET placed_at = placed_at || char(0) || 'x' WHERE id = 5",
        "orders.placed_at: declared timestamptz holds 1 values",
        "orders.placed_at at key 5: value '20",
    ),
    (
        "finer-than-a-microsecond",
        "UPDATE appointments SET created_at = '9999-12-31 23:59:59.9999995' WHERE id = 14",
        "appointments.created_at: declared timestamptz holds 1 values",
        "appointments.created_at at key 14: value '9999-12-31 23:59:59.9999995'",
    ),
    (
        "offset-in-time-of-day",
        "UPDATE barber_availability SET starts = '10:00+02:00' WHERE id = 2",
        "barber_availability.starts: declared time holds 1 values",
        "barber_availability.starts at key 2: value '10:00+02:00'",
    ),
    (
        "json-member-twice",
        """UPDATE users SET preferences = '{"a": 1, "a": 2}' WHERE id = 6""",
        "users.preferences: declared jsonb holds 1 values",
        'users.preferences at key 6: value \'{"a": 1, "a": 2}\'',
    ),
    (
        "number-in-blob",
        "UPDATE users SET avatar = 12 WHERE id = 7",
        "users.avatar: 1 values of bytea are numbers",
        "users.avatar at key 7: value 12",
    ),
    (
        "other-digits-in-integer",
        "UPDATE services SET duration_minutes = '\u0663' WHERE id = 7",
        "services.duration_minutes: declared bigint holds 1 values",
        "services.duration_minutes at key 7: value '\u0663'",
    ),
    (
        "varchar-too-long",
        "UPDATE users SET phone = '+33 6 00 00 00 00 extension 1234567890' WHERE id = 4",
        "users.phone: declared varchar(32) holds 1 values",
        "users.phone at key 4: value '+33 6 00 00 00 00 extension 1234567890'",
    ),
]


def add_oddities(path: Path) -> None:
    """Every one-off oddity at once (each on its own row)."""
    with sqlite3.connect(path) as conn:
        for _name, change, _reported, _refused in ODDITIES:
            conn.execute(change)
