import CorralCore
import Logging
import PostgresNIO

/// The store's tables, as numbered migrations. Each runs once, in order, in the transaction
/// that records it in `schema_migrations`; a database whose newest recorded migration is
/// beyond `latest` belongs to a newer corral and is refused before anything is written.
enum PostgresSchema {
    struct Migration {
        var version: Int
        var name: String
        var statements: [String]
    }

    static var latest: Int { migrations.last?.version ?? 0 }

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "sessions and events",
            statements: [
                """
                CREATE TABLE sessions (
                    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
                    tenant text NOT NULL CHECK (tenant ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
                    created_ns bigint NOT NULL,
                    -- A JSON object of strings, as corral encodes it (text: jsonb refuses \\u0000).
                    metadata text NOT NULL,
                    forked_from text,
                    forked_at bigint CHECK (forked_at >= 0),
                    head bigint NOT NULL DEFAULT 0 CHECK (head >= 0),
                    epoch bigint NOT NULL DEFAULT 1 CHECK (epoch >= 1)
                )
                """,
                """
                CREATE TABLE events (
                    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                    seq bigint NOT NULL CHECK (seq >= 1),
                    event_id text NOT NULL CHECK (octet_length(event_id) BETWEEN 1 AND 128),
                    type text NOT NULL CHECK (octet_length(type) BETWEEN 1 AND 255),
                    time_ns bigint NOT NULL,
                    epoch bigint NOT NULL CHECK (epoch >= 1),
                    -- Exactly the JSON the writer's data encoded to.
                    data text NOT NULL,
                    PRIMARY KEY (session_id, seq)
                )
                """,
                appendBatch(fastPath: false),
                // Tails are told after the appends commit, in a transaction of their own: a NOTIFY
                // holds a lock that serialises committing transactions until their WAL flush,
                // which would undo the server's own group commit of concurrent appends. This one
                // writes no WAL and waits for no flush.
                """
                CREATE FUNCTION notify_heads(p_channel text, p_sessions text[], p_heads bigint[])
                RETURNS void LANGUAGE plpgsql AS $fn$
                BEGIN
                    PERFORM set_config('synchronous_commit', 'off', true);
                    PERFORM pg_notify(p_channel, s || ' ' || h) FROM unnest(p_sessions, p_heads) AS u (s, h);
                END
                $fn$
                """,
                // A fork: the parent's row is held FOR SHARE (appends to it wait) while its
                // events up to the fork point are copied.
                """
                CREATE FUNCTION fork_session(p_parent text, p_new text, p_at bigint, p_created bigint)
                RETURNS TABLE (r_outcome text, r_head bigint, r_tenant text, r_metadata text, r_epoch bigint)
                LANGUAGE plpgsql AS $fn$
                DECLARE
                    parent sessions%ROWTYPE;
                BEGIN
                    SELECT * INTO parent FROM sessions WHERE id = p_parent FOR SHARE;
                    IF NOT FOUND THEN
                        r_outcome := 'missing'; RETURN NEXT; RETURN;
                    END IF;
                    r_head := parent.head; r_tenant := parent.tenant; r_metadata := parent.metadata; r_epoch := parent.epoch;
                    IF p_at > parent.head THEN
                        r_outcome := 'past'; RETURN NEXT; RETURN;
                    END IF;
                    INSERT INTO sessions (id, tenant, created_ns, metadata, forked_from, forked_at, head, epoch)
                        VALUES (p_new, parent.tenant, p_created, parent.metadata, p_parent, p_at, p_at, parent.epoch)
                        ON CONFLICT (id) DO NOTHING;
                    IF NOT FOUND THEN
                        r_outcome := 'exists'; RETURN NEXT; RETURN;
                    END IF;
                    INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                        SELECT p_new, e.seq, e.event_id, e.type, e.time_ns, e.epoch, e.data FROM events e
                        WHERE e.session_id = p_parent AND e.seq <= p_at;
                    r_outcome := 'ok'; r_head := p_at;
                    RETURN NEXT;
                END
                $fn$
                """,
            ]),
        // The control plane's short lists (tenants, worker tokens), each the JSON of a
        // `RecordList`, so that every replica reads and changes the same ones.
        Migration(
            version: 2, name: "record lists",
            statements: [
                """
                CREATE TABLE record_lists (
                    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,63}$'),
                    body text NOT NULL,
                    version bigint NOT NULL CHECK (version >= 0)
                )
                """
            ]),
        // Which replica runs which session's harness (`RunLeases`).
        Migration(
            version: 3, name: "run leases",
            statements: [
                """
                CREATE TABLE run_leases (
                    session_id text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
                    tenant text NOT NULL,
                    owner text NOT NULL CHECK (octet_length(owner) BETWEEN 1 AND 200),
                    epoch bigint NOT NULL CHECK (epoch >= 1),
                    state text NOT NULL CHECK (state IN ('running', 'stopping', 'ended')),
                    expires_at timestamptz NOT NULL
                )
                """,
                "CREATE INDEX run_leases_expiring ON run_leases (expires_at) WHERE state <> 'ended'",
            ]),
        // How many sandboxes each replica holds per tenant (`SandboxTallies`), for quotas that
        // hold across replicas; `seen_at` is when that replica last published or refreshed.
        Migration(
            version: 4, name: "sandbox tallies",
            statements: [
                """
                CREATE TABLE sandbox_tallies (
                    replica text NOT NULL CHECK (octet_length(replica) BETWEEN 1 AND 200),
                    tenant text NOT NULL,
                    count int NOT NULL CHECK (count >= 0),
                    seen_at timestamptz NOT NULL,
                    PRIMARY KEY (tenant, replica)
                )
                """,
                "CREATE INDEX sandbox_tallies_replica ON sandbox_tallies (replica)",
            ]),
        // The common append (the session's epoch, and its expectedSeq or no ids of the caller's
        // to recognise a retry by) in one UPDATE that locks, fences and moves the head, instead
        // of a SELECT ... FOR UPDATE and an UPDATE: a quarter more single appends a second.
        Migration(version: 5, name: "append fast path", statements: [appendBatch(fastPath: true)]),
        // One event appended while no other append is under way (`append_one`): scalar
        // arguments instead of arrays, and the tails told in the same transaction, so a lone
        // append costs the server one transaction instead of two. Anything the one UPDATE
        // does not settle goes to `append_batch`.
        Migration(version: 6, name: "lone append", statements: [appendOne]),
    ]

    /// One event, one call: the common case of `append_batch`'s fast path with its NOTIFY
    /// inside. A NOTIFY holds a lock from commit until the WAL flush, which serialises the
    /// commits of concurrent NOTIFYing transactions; so only an append that has the store's
    /// committer to itself comes here, and batches notify after they commit.
    static let appendOne = """
        CREATE FUNCTION append_one(
            p_session text, p_epoch bigint, p_expected bigint, p_time bigint, p_id text, p_caller boolean,
            p_type text, p_data text, p_sync boolean, p_channel text)
        RETURNS TABLE (r_call int, r_outcome text, r_first bigint, r_written int, r_head bigint, r_epoch bigint)
        LANGUAGE plpgsql AS $fn$
        BEGIN
            IF NOT p_sync THEN
                PERFORM set_config('synchronous_commit', 'off', true);
            END IF;
            r_call := 1;
            IF p_expected >= 0 OR NOT p_caller THEN
                UPDATE sessions s SET head = s.head + 1
                    WHERE s.id = p_session AND s.epoch = p_epoch AND (p_expected < 0 OR s.head = p_expected - 1)
                    RETURNING s.head, s.epoch INTO r_head, r_epoch;
                IF FOUND THEN
                    INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                        VALUES (p_session, r_head, p_id, p_type, p_time, p_epoch, p_data);
                    PERFORM pg_notify(p_channel, p_session || ' ' || r_head);
                    r_outcome := 'ok'; r_first := r_head; r_written := 1;
                    RETURN NEXT;
                    RETURN;
                END IF;
            END IF;
            SELECT b.r_outcome, b.r_first, b.r_written, b.r_head, b.r_epoch
                INTO r_outcome, r_first, r_written, r_head, r_epoch
                FROM append_batch(ARRAY[p_session], ARRAY[p_epoch], ARRAY[p_expected], ARRAY[1], ARRAY[p_time],
                    ARRAY[p_id], ARRAY[p_caller], ARRAY[p_type], ARRAY[p_data], p_sync) AS b;
            IF r_outcome = 'ok' AND r_written > 0 THEN
                PERFORM pg_notify(p_channel, p_session || ' ' || r_head);
            END IF;
            RETURN NEXT;
        END
        $fn$
        """

    /// `append_batch`: appends, one or many (group commit), in one call and one transaction.
    /// Each append locks its session's row, checks the lease epoch and expectedSeq (or
    /// recognises a retry by its event ids) and inserts; a refused append writes nothing and
    /// does not stop the others. Appends come sorted by session, so that two batches lock rows
    /// in the same order and cannot deadlock. With `fastPath`, an append that needs no look at
    /// its session's stored events (it gives expectedSeq, or no ids of the caller's) is done by
    /// one UPDATE first, and only one that UPDATE does not match takes the full path.
    static func appendBatch(fastPath: Bool) -> String {
        let fastPath =
            fastPath
            ? """
            IF p_expected[c] >= 0 OR NOT p_caller[base + 1] THEN
                        UPDATE sessions s SET head = s.head + n
                            WHERE s.id = p_sessions[c] AND s.epoch = p_epochs[c]
                            AND (p_expected[c] < 0 OR s.head = p_expected[c] - 1)
                            RETURNING s.head, s.epoch INTO r_head, r_epoch;
                        IF FOUND THEN
                            IF n = 1 THEN
                                -- One event: VALUES, a tenth cheaper than a SELECT over generate_series.
                                INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                                    VALUES (p_sessions[c], r_head, p_ids[base + 1], p_types[base + 1], p_times[c],
                                        p_epochs[c], p_data[base + 1]);
                            ELSE
                                INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                                    SELECT p_sessions[c], r_head - n + g, p_ids[base + g], p_types[base + g],
                                        p_times[c], p_epochs[c], p_data[base + g]
                                    FROM generate_series(1, n) AS g;
                            END IF;
                            r_outcome := 'ok'; r_first := r_head - n + 1; r_written := n;
                            RETURN NEXT; base := base + n; CONTINUE calls;
                        END IF;
                    END IF;
            """ : ""
        return """
            CREATE OR REPLACE FUNCTION append_batch(
                p_sessions text[], p_epochs bigint[], p_expected bigint[], p_counts int[], p_times bigint[],
                p_ids text[], p_caller boolean[], p_types text[], p_data text[], p_sync boolean)
            RETURNS TABLE (r_call int, r_outcome text, r_first bigint, r_written int, r_head bigint, r_epoch bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                c int;
                n int;
                base int := 0;
                cur_head bigint;
                cur_epoch bigint;
                skip int;
                start bigint;
                overlap int;
                win int;
                pos int;
                stored text[];
                ok boolean;
                i int;
            BEGIN
                IF NOT p_sync THEN
                    PERFORM set_config('synchronous_commit', 'off', true);
                END IF;
                <<calls>>
                FOR c IN 1 .. coalesce(array_length(p_sessions, 1), 0) LOOP
                    n := p_counts[c];
                    r_call := c;
                    r_first := 0;
                    r_written := 0;
                    \(fastPath)
                    SELECT s.head, s.epoch INTO cur_head, cur_epoch FROM sessions s WHERE s.id = p_sessions[c] FOR UPDATE;
                    IF NOT FOUND THEN
                        r_outcome := 'missing'; r_head := 0; r_epoch := 0;
                        RETURN NEXT; base := base + n; CONTINUE calls;
                    END IF;
                    r_head := cur_head;
                    r_epoch := cur_epoch;
                    IF p_epochs[c] <> cur_epoch THEN
                        r_outcome := 'epoch';
                        RETURN NEXT; base := base + n; CONTINUE calls;
                    END IF;
                    skip := 0;
                    start := cur_head + 1;
                    IF p_expected[c] >= 0 THEN
                        IF p_expected[c] <> cur_head + 1 THEN
                            ok := p_expected[c] >= 1 AND p_expected[c] <= cur_head;
                            IF ok THEN
                                overlap := least(n::bigint, cur_head - p_expected[c] + 1)::int;
                                SELECT array_agg(e.event_id ORDER BY e.seq) INTO stored FROM events e
                                    WHERE e.session_id = p_sessions[c]
                                    AND e.seq BETWEEN p_expected[c] AND p_expected[c] + overlap - 1;
                                FOR i IN 1 .. overlap LOOP
                                    IF NOT p_caller[base + i] OR stored[i] IS DISTINCT FROM p_ids[base + i] THEN
                                        ok := false; EXIT;
                                    END IF;
                                END LOOP;
                            END IF;
                            IF NOT ok THEN
                                r_outcome := 'expected';
                                RETURN NEXT; base := base + n; CONTINUE calls;
                            END IF;
                            skip := overlap;
                            start := p_expected[c];
                        END IF;
                    ELSIF p_caller[base + 1] AND cur_head > 0 THEN
                        -- No expectedSeq: a retry of the latest append is still recognised by its ids.
                        win := least(n::bigint, cur_head)::int;
                        SELECT array_agg(e.event_id ORDER BY e.seq) INTO stored FROM events e
                            WHERE e.session_id = p_sessions[c] AND e.seq > cur_head - win;
                        pos := array_position(stored, p_ids[base + 1]);
                        IF pos IS NOT NULL THEN
                            overlap := win - pos + 1;
                            FOR i IN 1 .. overlap LOOP
                                IF NOT p_caller[base + i] OR stored[pos + i - 1] IS DISTINCT FROM p_ids[base + i] THEN
                                    r_outcome := 'duplicate'; r_first := cur_head - overlap + 1;
                                    RETURN NEXT; base := base + n; CONTINUE calls;
                                END IF;
                            END LOOP;
                            skip := overlap;
                            start := cur_head + 1 - overlap;
                        END IF;
                    END IF;
                    IF skip < n THEN
                        INSERT INTO events (session_id, seq, event_id, type, time_ns, epoch, data)
                            SELECT p_sessions[c], cur_head + g - skip, p_ids[base + g], p_types[base + g],
                                p_times[c], p_epochs[c], p_data[base + g]
                            FROM generate_series(skip + 1, n) AS g;
                        r_head := cur_head + n - skip;
                        UPDATE sessions SET head = r_head WHERE id = p_sessions[c];
                    END IF;
                    r_outcome := 'ok';
                    r_first := start;
                    r_written := n - skip;
                    RETURN NEXT;
                    base := base + n;
                END LOOP;
            END
            $fn$
            """
    }

    /// Brings the schema to `latest` on `connection`, under an advisory lock so that replicas
    /// starting together migrate once. Refuses a newer schema, writing nothing.
    static func migrate(_ connection: PostgresConnection, url: PostgresStoreURL, logger: Logger) async throws {
        let schema = url.schema
        let lockKey = "corral-migrations:\(schema)"
        try await connection.rows("BEGIN", logger: logger)
        do {
            try await connection.rows("SELECT pg_advisory_xact_lock(hashtext(\(lockKey)))", logger: logger)
            var applied = 0
            let table = "\(schema).schema_migrations"
            let check: PostgresQuery = "SELECT to_regclass(\(table)) IS NOT NULL"
            let exists = try await connection.rows(check, logger: logger).decode(Bool.self).gather().first ?? false
            if exists {
                let newest: PostgresQuery =
                    "SELECT coalesce(max(version), 0)::int8 FROM \(unescaped: schema).schema_migrations"
                let rows = try await connection.rows(newest, logger: logger).decode(Int64.self).gather()
                applied = Int(rows.first ?? 0)
            }
            if applied > latest {
                throw CorralError(
                    .unsupported,
                    "the session store at \(url) has schema version \(applied); this corral knows up to \(latest)",
                    hint: "run the newer corral that migrated it (nothing was written)")
            }
            if applied < latest {
                try await connection.rows("CREATE SCHEMA IF NOT EXISTS \(unescaped: schema)", logger: logger)
                try await connection.rows(
                    """
                    CREATE TABLE IF NOT EXISTS \(unescaped: schema).schema_migrations (
                        version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """, logger: logger)
                for migration in migrations where migration.version > applied {
                    for statement in migration.statements {
                        try await connection.rows(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.rows(
                        "INSERT INTO \(unescaped: schema).schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                        logger: logger)
                    logger.info(
                        "session store migrated",
                        metadata: ["store": "\(url)", "version": "\(migration.version)", "name": "\(migration.name)"])
                }
            }
            try await connection.rows("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.rows("ROLLBACK", logger: logger)
            throw error
        }
    }
}
