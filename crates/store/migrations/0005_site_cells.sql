-- Every site is a cell: its own unix user on its web server, its own application secret, and
-- platforms that say which application they are. Database passwords for dbprov travel sealed
-- to the db server's key, which is recorded here the first time it is learnt.

-- The site's unix user: `<prefix><id>` like its first database name, and unlike that name it
-- never changes (a restore or migrate gives the database a new name). Sites made before
-- this migration take their database's base name; their next verify creates the user.
ALTER TABLE sites ADD COLUMN system_user text;
UPDATE sites SET system_user = regexp_replace(db_user, '_[rm][0-9]+$', '');
ALTER TABLE sites ALTER COLUMN system_user SET NOT NULL;

-- Secret, like db_password: what a site's keys and salts are derived from. Made once.
ALTER TABLE sites ADD COLUMN app_secret text;

-- The application a platform holds (the manifest's [application] name, or the driver's):
-- a site migrates only between platforms of the same application.
ALTER TABLE platforms ADD COLUMN application text;
UPDATE platforms SET application = manifest -> 'application' ->> 'name' WHERE manifest IS NOT NULL;

-- A db server's public key (base64, X25519): database passwords are sealed to it.
ALTER TABLE servers ADD COLUMN public_key text;
