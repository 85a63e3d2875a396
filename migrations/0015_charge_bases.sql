-- What each charge was computed from. A charge is an amount per unit times a number of units: per
-- image for Luma and Replicate (one unit, the amount being the charge), per megapixel of output for
-- fal.ai (the image's pixels in megapixels times the rate, rounded up to the micro-dollar). Written
-- with the charge, in the same statement; `billed_units` is the provider's own count of what it
-- billed for the request (fal's `x-fal-billable-units`), as it wrote it, once it said. Charges
-- recorded before this migration have none (NULL).
ALTER TABLE generations ADD COLUMN charge_basis TEXT CHECK (charge_basis IN ('per-image', 'per-megapixel'));
-- The amount per unit, micro-dollars (per image, or per megapixel).
ALTER TABLE generations ADD COLUMN charge_rate_micros INTEGER CHECK (charge_rate_micros >= 0);
-- Units charged, in millionths: 1,000,000 for one image; an image's pixel count per megapixel.
ALTER TABLE generations ADD COLUMN charge_units_millionths INTEGER CHECK (charge_units_millionths >= 0);
ALTER TABLE generations ADD COLUMN billed_units TEXT;
