/*!
Message types and framing — pure.
*/
