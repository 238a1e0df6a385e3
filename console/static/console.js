// The console's one script (no inline script: the Content-Security-Policy forbids it). Pages work
// without it; with it: the focus lands where the page says (autofocus after a redirect to a
// #fragment, which browsers skip), "/" finds a customer, the idle-timeout warning with "stay signed
// in", and what was typed in notes and choices survives a sign-in in between (never passwords,
// codes, ID numbers or any other typed-in number: only text areas and select lists are kept).
(function () {
  'use strict';
  var body = document.body;
  var KEPT = 'bc.kept';
  var LAST_ACTIVE = 'bc.lastActive';
  var NEVER_KEPT = /pass|code|id_number|answer|secret|token|csrf|value/i;

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  // --- focus: the next thing to do -----------------------------------------------------------
  function focusNextStep() {
    var target = document.querySelector('[autofocus]');
    if (target && (document.activeElement === body || document.activeElement === null)) {
      target.focus({preventScroll: true});
      // In the middle of the screen, with its message (and an error under it) in view.
      var box = target.getBoundingClientRect();
      if (box.top < 0 || box.bottom > window.innerHeight * 0.6) { target.scrollIntoView({block: 'center'}); }
    }
  }

  document.addEventListener('submit', function (event) {
    var form = event.target;
    var then = form.getAttribute('data-then-focus');
    if (then) {  // e.g. printing opens the receipt in a new tab; the next customer is next here
      window.setTimeout(function () {
        var next = document.getElementById(then);
        if (next) { next.focus(); }
      }, 0);
    }
    keepTyped(form, 'sent');
  });

  // --- keyboard: "/" finds a customer ------------------------------------------------------------
  document.addEventListener('keydown', function (event) {
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var search = document.querySelector('form.searchbar input[name=value]');
    if (search) {
      event.preventDefault();
      search.focus();
      search.select();
    } else if (body.getAttribute('data-search-url')) {
      event.preventDefault();
      window.location.assign(body.getAttribute('data-search-url'));
    }
  });

  // --- what was typed, kept across a sign-in ----------------------------------------------------
  function keepable(el) {
    return el.name && !NEVER_KEPT.test(el.name) && (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT');
  }

  function keepTyped(form, state) {
    var saved = {path: location.pathname + location.search, state: state, fields: {}};
    var forms = form ? [form] : Array.prototype.slice.call(document.forms);
    forms.forEach(function (f) {
      Array.prototype.forEach.call(f.elements, function (el) {
        if (keepable(el) && el.value) { saved.fields[f.getAttribute('action') + '|' + el.name] = el.value; }
      });
    });
    try {
      if (Object.keys(saved.fields).length) { sessionStorage.setItem(KEPT, JSON.stringify(saved)); }
    } catch (e) { /* storage unavailable: nothing kept */ }
  }

  function restoreTyped() {
    var saved;
    try { saved = JSON.parse(sessionStorage.getItem(KEPT) || 'null'); } catch (e) { saved = null; }
    if (!saved) { return; }
    if (location.pathname.indexOf('/auth/') === 0) {
      // Signing in: a form sent when the session had already ended was not done; keep it.
      if (saved.state === 'sent') { saved.state = 'away'; sessionStorage.setItem(KEPT, JSON.stringify(saved)); }
      return;
    }
    sessionStorage.removeItem(KEPT);
    if (saved.state !== 'away' || saved.path !== location.pathname + location.search) { return; }
    Array.prototype.forEach.call(document.forms, function (f) {
      Array.prototype.forEach.call(f.elements, function (el) {
        var value = saved.fields[f.getAttribute('action') + '|' + el.name];
        if (value !== undefined && keepable(el)) { el.value = value; }
      });
    });
  }

  // --- the idle timeout: warn, stay signed in ------------------------------------------------------
  function idleWatch() {
    var idle = parseInt(body.getAttribute('data-idle-seconds'), 10);
    var warnBefore = parseInt(body.getAttribute('data-idle-warn-seconds'), 10);
    var dialog = document.getElementById('idle-warning');
    if (!idle || !dialog) { return; }
    var countdown = dialog.querySelector('[data-idle-countdown]');
    var stay = dialog.querySelector('[data-stay-signed-in]');
    var token = document.querySelector('meta[name=csrf-token]');
    var returnFocus = null;

    function lastActive() {
      var shared = 0;
      try { shared = parseInt(localStorage.getItem(LAST_ACTIVE), 10) || 0; } catch (e) { shared = 0; }
      return Math.max(shared, ownActive);
    }
    function active(now) {
      ownActive = now;
      try { localStorage.setItem(LAST_ACTIVE, String(now)); } catch (e) { /* one tab only then */ }
    }
    function signInAgain() {
      keepTyped(null, 'away');
      window.location.assign(body.getAttribute('data-login-url') + '?next=' +
                             encodeURIComponent(location.pathname + location.search));
    }
    function hide() {
      dialog.hidden = true;
      if (returnFocus && document.contains(returnFocus)) { returnFocus.focus(); }
      returnFocus = null;
    }

    var ownActive = 0;
    active(Date.now());  // this page was served: the server saw activity now
    stay.addEventListener('click', function () {
      fetch(body.getAttribute('data-keepalive-url'), {
        method: 'POST', credentials: 'same-origin',
        headers: {'X-CSRFToken': token ? token.content : '', 'Accept': 'application/json'}
      }).then(function (response) {
        if (response.status === 401) { signInAgain(); return; }
        if (response.ok) { active(Date.now()); hide(); }
      });
    });

    window.setInterval(function () {
      var left = Math.round(idle - (Date.now() - lastActive()) / 1000);
      if (left <= 0) { signInAgain(); return; }
      if (left > warnBefore) {
        if (!dialog.hidden) { hide(); }  // another tab kept the session alive
        return;
      }
      countdown.textContent = Math.floor(left / 60) + ':' + String(left % 60).padStart(2, '0');
      if (dialog.hidden) {
        returnFocus = document.activeElement;
        dialog.hidden = false;
        stay.focus();
      }
    }, 1000);
  }

  restoreTyped();
  focusNextStep();
  // Going to a #fragment moves the focus back to the page once it has loaded: focus again then.
  window.addEventListener('load', function () { window.setTimeout(focusNextStep, 0); });
  idleWatch();
}());
