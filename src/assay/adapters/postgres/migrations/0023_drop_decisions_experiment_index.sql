-- assay_decisions_experiment (0003, carried onto the partitions by 0016) is dropped: no
-- query reads it. Decision records are read by id alone (``GET /decisions/{id}``, through
-- the primary key), by expiry (the primary key's decision ids, and ``decided_at`` in the
-- default partition) and by ``assay db stats`` (sizes from the catalogue); reports read the
-- exposures and their rollups, never decision records. Dropped on the partitioned table,
-- it goes from every partition: each day of decision records loses a third of its size,
-- which is that much less for every write to maintain and for the expiry to free
-- (docs/retention.md).
DROP INDEX IF EXISTS assay_decisions_experiment;
