-- What each charge was computed from. A charge is an amount per unit times a number of units: per
-- image for Luma and Replicate (one unit, the amount being the charge), per megapixel of output for
-- fal.ai (the image's pixels in megapixels times the rate, rounded up to the micro-dollar). One row
-- per charged generation, written beside its charge; `billed_units` is the provider's own count of
-- what it billed for the request (fal's `x-fal-billable-units`), as it wrote it, once it said.
-- Charges recorded before this migration have no row.
CREATE TABLE charge_bases (
    generation_id    INTEGER PRIMARY KEY REFERENCES generations (id),
    basis            TEXT    NOT NULL CHECK (basis IN ('per-image', 'per-megapixel')),
    -- The amount per unit, micro-dollars (per image, or per megapixel).
    rate_micros      INTEGER NOT NULL CHECK (rate_micros >= 0),
    -- Units charged, in millionths: 1,000,000 for one image; an image's pixel count per megapixel.
    units_millionths INTEGER NOT NULL CHECK (units_millionths >= 0),
    billed_units     TEXT
);
