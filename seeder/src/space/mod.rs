/*!
Space keys and codes — pure: no I/O, no clock; randomness is passed in.
*/
