"""Typical messages used by the pure-core benchmarks (what a desk phone sends)."""

INVITE = (
    b"INVITE sip:+33612345678@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:+33612345678@pbx.example.com>\r\n"
    b'From: "Alice Martin" <sip:1001@pbx.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@192.168.1.20\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:1001@192.168.1.20:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: Yealink SIP-T46U 108.86.0.20\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 141\r\n"
    b"\r\n"
    b"v=0\r\no=- 3712 3712 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\nm=audio 11780 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:1001@pbx.example.com>\r\n"
    b"From: <sip:1001@pbx.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'Contact: <sip:1001@192.168.1.20:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: Yealink SIP-T46U 108.86.0.20\r\n"
    b'Authorization: Digest username="1001", realm="pbx.example.com", nonce="abc123", '
    b'uri="sip:pbx.example.com", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
    b'qop=auth, nc=00000001, cnonce="xyz"\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)
