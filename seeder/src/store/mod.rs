/*!
Durable feeds on disk.
*/
