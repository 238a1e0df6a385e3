// The administration's scripts, without inline handlers (the Content-Security-Policy forbids them).
(function () {
  'use strict';

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // Bulk actions: the confirmation names every selected account ({accounts} in its text).
  function runBulkAction(name) {
    var chosen = Array.prototype.slice.call(document.querySelectorAll('input.action-checkbox:checked'));
    if (!chosen.length) {
      window.alert(readJSON('message-data') || '');
      return;
    }
    var names = chosen.map(function (box) { return box.getAttribute('data-account') || box.value; });
    var question = (readJSON('actions-confirmation-data') || {})[name];
    if (question && !window.confirm(question.replace('{accounts}', names.join(document.documentElement.lang === 'en' ? ', ' : '、')))) {
      return;
    }
    var form = document.getElementById('action_form');
    form.querySelector('#action').value = name;
    Array.prototype.forEach.call(form.querySelectorAll('input.action-checkbox'), function (old) { old.remove(); });
    chosen.forEach(function (box) {
      var copy = document.createElement('input');
      copy.type = 'hidden';
      copy.name = 'rowid';
      copy.className = 'action-checkbox';
      copy.value = box.value;
      form.appendChild(copy);
    });
    form.submit();
  }

  document.addEventListener('click', function (event) {
    var link = event.target.closest('[data-model-action]');
    if (link) {
      event.preventDefault();
      runBulkAction(link.getAttribute('data-model-action'));
      return;
    }
    if (event.target.closest('[data-print]')) {
      window.print();
    }
  });

  // "Select all" keeps its state in step with the rows.
  document.addEventListener('change', function (event) {
    if (event.target.matches('.action-rowtoggle')) {
      Array.prototype.forEach.call(document.querySelectorAll('input.action-checkbox'), function (box) {
        box.checked = event.target.checked;
      });
    }
  });
}());
