// Security keys (WebAuthn) on the console's forms: a form marked data-webauthn="create" or "get"
// carries the server's options (data-options, JSON with base64url fields); pressing its button runs
// the browser's ceremony, puts the answer (JSON, base64url fields) in its hidden "credential" field
// and sends the form. The challenge lives on the server; nothing here is secret. No inline script:
// the Content-Security-Policy forbids it. The words come from the page (data-msg-*), translated.
(function () {
  'use strict';

  function toBytes(value) {
    var base64 = value.replace(/-/g, '+').replace(/_/g, '/');
    base64 += '===='.slice(0, (4 - base64.length % 4) % 4);
    var raw = atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var raw = '';
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      var copy = {type: item.type, id: toBytes(item.id)};
      if (item.transports) { copy.transports = item.transports; }
      return copy;
    });
  }

  function creationOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = descriptors(options.excludeCredentials);
    return {publicKey: options};
  }

  function requestOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = descriptors(options.allowCredentials);
    return {publicKey: options};
  }

  function answer(credential) {
    var response = credential.response;
    var json = {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: {clientDataJSON: toText(response.clientDataJSON)}
    };
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      json.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      json.response.userHandle = toText(response.userHandle);
    }
    return JSON.stringify(json);
  }

  function explain(form, error) {
    var name = error && error.name;
    if (name === 'NotAllowedError' || name === 'AbortError') { return form.getAttribute('data-msg-cancelled'); }
    if (name === 'InvalidStateError') { return form.getAttribute('data-msg-exists'); }
    if (name === 'SecurityError') { return form.getAttribute('data-msg-address'); }
    if (name === 'NotSupportedError') { return form.getAttribute('data-msg-unsupported'); }
    return form.getAttribute('data-msg-failed');
  }

  function say(form, text, isError) {
    var status = form.querySelector('[data-webauthn-status]');
    if (!status) { return; }
    status.textContent = text || '';
    status.hidden = !text;
    status.className = isError ? 'error' : 'muted';
  }

  function setUp(form) {
    var kind = form.getAttribute('data-webauthn');
    var button = form.querySelector('button[type=submit]');
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(form, form.getAttribute('data-msg-unsupported'), true);
      if (button) { button.disabled = true; }
      return;
    }
    var busy = false;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      if (busy) { return; }
      var name = form.querySelector('input[name=name]');
      if (name && !name.value.trim()) {
        say(form, form.getAttribute('data-msg-name'), true);
        name.setAttribute('aria-invalid', 'true');
        name.focus();
        return;
      }
      var options = JSON.parse(form.getAttribute('data-options'));
      var ceremony = kind === 'create'
        ? navigator.credentials.create(creationOptions(options))
        : navigator.credentials.get(requestOptions(options));
      busy = true;
      if (button) { button.disabled = true; }
      say(form, form.getAttribute('data-msg-working'), false);
      ceremony.then(function (credential) {
        if (!credential) { throw {name: 'NotAllowedError'}; }
        form.querySelector('input[name=credential]').value = answer(credential);
        form.submit();
      }).catch(function (error) {
        busy = false;
        if (button) { button.disabled = false; button.focus(); }
        say(form, explain(form, error), true);
      });
    });
  }

  var forms = document.querySelectorAll('form[data-webauthn]');
  for (var i = 0; i < forms.length; i++) { setUp(forms[i]); }
}());
