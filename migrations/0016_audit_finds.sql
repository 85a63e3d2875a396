-- Generations an account audit found on the upstream's list and booked (adopted, or recorded as an
-- extra charge). An audit books a found generation only against a create of this ledger whose answer
-- was never seen (`not_created`) and that no earlier find has accounted for, so the generations of
-- another ledger or tool on the same account, with the same request, are never charged here.
ALTER TABLE generations ADD COLUMN found_by_audit INTEGER NOT NULL DEFAULT 0 CHECK (found_by_audit IN (0, 1));
