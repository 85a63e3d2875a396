-- The balance observer's reading of a run's charges (`charges_since`: generations after a watermark
-- or submitted since a reading) looked the pass's tasks up first and so read every task of the job
-- on each recorded charge: a million-task job crawled. With this index the query reads only the
-- generations of the run (the rowid range after the watermark, and this index for the ones
-- submitted since the reading), whatever the job's size.
CREATE INDEX generations_by_submitted ON generations (submitted_at) WHERE submitted_at IS NOT NULL;
