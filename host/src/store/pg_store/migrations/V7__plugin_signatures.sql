-- The signature an uploaded plugin came with (JSON, see runtime/signing.rs), checked again by
-- every node that loads it.
ALTER TABLE uploaded_plugins ADD COLUMN signature TEXT;
